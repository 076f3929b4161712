"""Leaderboard page script (see dashboards.views.leaderboard)."""

from dashboards.common import live
from dashboards.views import leaderboard

live(leaderboard.render)
