"""`python -m models prepare|list|train-exits|profile` (see models/cli.py)."""

import logging
import sys

from models.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
