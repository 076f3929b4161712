"""`python -m fleet_center`: the distribution center."""

import os

# Before torch loads: OpenMP workers that spin while waiting made inference 10x slower whenever other
# processes share the cores (several nodes on one host, or a Pi also running its sensors).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys

from broker.errors import BusError, ConfigError
from broker.roles import configure_logging, run_service
from broker.settings import load
from fleet_center.config import CenterConfig
from fleet_center.service import CenterService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_center", description=__doc__)
    parser.add_argument("--config", help="TOML file; settings under [center]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    args = parser.parse_args(argv)
    configure_logging("center")
    try:
        config = load(CenterConfig, args.config, overrides=args.set, section="center")
        return run_service(CenterService(config))
    except (ConfigError, BusError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
