"""`python -m cloud_node`: a cloud worker (session contexts, continuation from edge hidden states)."""

import os

# Before torch loads: OpenMP workers that spin while waiting made inference 10x slower whenever other
# processes share the cores (several nodes on one host, or a Pi also running its sensors).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys

from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from runtime.roles import node_main


def main(argv: list[str] | None = None) -> int:
    return node_main("python -m cloud_node", __doc__, "cloud", CloudConfig, CloudService, argv)


if __name__ == "__main__":
    sys.exit(main())
