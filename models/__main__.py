"""`python -m models prepare|list|train-exits|profile` (see models/cli.py)."""

import os

# Before torch loads, as in every node (see edge_node/__main__.py): `profile` times tokens the way the nodes
# run them; spinning OpenMP workers would also fight the kernels' own polling workers (models/lowbit/pool.c).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging
import sys

from models.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
