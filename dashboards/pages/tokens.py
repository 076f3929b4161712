"""Tokens page script (see dashboards.views.tokens)."""

from dashboards.common import live
from dashboards.views import tokens

live(tokens.render)
