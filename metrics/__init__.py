"""Metrics shared by the center (writes) and the dashboards (reads): point schema, stores and local servers."""
