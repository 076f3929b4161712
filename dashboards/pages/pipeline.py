"""Pipeline page script (see dashboards.views.pipeline)."""

from dashboards.common import live
from dashboards.views import pipeline

live(pipeline.render)
