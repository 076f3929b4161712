"""`python -m cloud_node`: a cloud worker (session contexts, continuation from edge hidden states)."""

import os

# Before torch loads: OpenMP workers that spin while waiting made inference 10x slower whenever other
# processes share the cores (several nodes on one host, or a Pi also running its sensors).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys

from broker.errors import BusError, ConfigError
from broker.roles import configure_logging, run_service
from broker.settings import load
from cloud_node.config import CloudConfig
from cloud_node.service import CloudService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud_node", description=__doc__)
    parser.add_argument("--config", help="TOML file; settings under [cloud]")
    parser.add_argument("--node-id", help="this node's id (default from config)")
    parser.add_argument("--broker", help="broker host[:port], e.g. center.local:1883")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    args = parser.parse_args(argv)
    overrides = list(args.set)
    if args.node_id:
        overrides.append(f"node_id={args.node_id}")
    if args.broker:
        host, _, port = args.broker.partition(":")
        overrides += [f"bus.host={host}"] + ([f"bus.port={port}"] if port else [])
    try:
        config = load(CloudConfig, args.config, overrides=overrides, section="cloud")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(config.node_id)
    try:
        return run_service(CloudService(config))
    except BusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
