"""edgefleet broker."""
