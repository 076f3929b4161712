"""`python -m local_fleet`: start the whole fleet on this machine (what `make run` does)."""

import sys

from local_fleet.launcher import main

if __name__ == "__main__":
    sys.exit(main())
