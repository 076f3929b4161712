"""edgefleet edge_node."""
