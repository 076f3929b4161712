"""Emulated deployment on one machine: slow edges (CPU quota) and long links (delayed, rate-limited TCP)."""
