"""Rounds page script (see dashboards.views.rounds)."""

from dashboards.common import live
from dashboards.views import rounds

live(rounds.render)
