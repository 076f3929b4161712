"""Caching page script (see dashboards.views.caching)."""

from dashboards.common import live
from dashboards.views import caching

live(caching.render)
