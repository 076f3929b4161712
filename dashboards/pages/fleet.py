"""Fleet page script (see dashboards.views.fleet)."""

from dashboards.common import live
from dashboards.views import fleet

live(fleet.render)
