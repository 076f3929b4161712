"""Pipeline inference: one model's layers split over several nodes, reallocated while it generates."""
