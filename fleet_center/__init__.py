"""edgefleet fleet_center."""
