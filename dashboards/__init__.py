"""edgefleet dashboards."""
