"""Benchmarks: each prints one JSON object as its last stdout line; results live in docs/benchmarks.md."""

import os

# Before torch loads, as the node entry points do (edge_node/__main__.py explains why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
