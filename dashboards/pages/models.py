"""Models page script (see dashboards.views.models)."""

from dashboards.common import live
from dashboards.views import models

live(models.render)
