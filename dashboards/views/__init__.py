"""Page bodies: each `render(context)` draws one page from query results shaped in `dashboards.shaping`."""
