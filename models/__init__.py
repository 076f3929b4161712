"""edgefleet models."""
