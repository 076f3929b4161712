"""`python -m edge_node --node-id pi-01`: an edge node (what runs on each Pi)."""

import os

# Before torch loads: OpenMP workers that spin while waiting made inference 10x slower whenever other
# processes share the cores (several nodes on one host, or a Pi also running its sensors).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys

from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from runtime.roles import node_main


def main(argv: list[str] | None = None) -> int:
    return node_main("python -m edge_node", __doc__, "edge", EdgeConfig, EdgeService, argv)


if __name__ == "__main__":
    sys.exit(main())
