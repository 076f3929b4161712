"""`sudo python3 -m edge_node.install install --node-id pi-04 --broker center.lan:1883 --password ...` (docs/pi.md)."""

import sys

from edge_node.install.cli import main

if __name__ == "__main__":
    sys.exit(main())
