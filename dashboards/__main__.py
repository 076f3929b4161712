"""`python -m dashboards [--port 8501] [--demo]`: serve the dashboard (settings from EDGEFLEET_DASHBOARD_*).

With --demo, a throwaway InfluxDB under a temporary directory is filled with a synthetic fleet first.
"""

from __future__ import annotations

import argparse
import logging

from dashboards.config import load_config
from dashboards.launcher import DashboardServerConfig, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument("--port", type=int, default=8501, help="HTTP port of the dashboard")
    parser.add_argument("--address", default="127.0.0.1", help="listen address (0.0.0.0 for the LAN)")
    parser.add_argument("--demo", action="store_true", help="start a temporary InfluxDB with a synthetic fleet")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    serve(DashboardServerConfig(args.address, args.port), load_config(), demo=args.demo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
