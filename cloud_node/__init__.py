"""edgefleet cloud_node."""
