"""`python -m fleet_center`: the distribution center."""

import os

# Before torch loads: OpenMP workers that spin while waiting made inference 10x slower whenever other
# processes share the cores (several nodes on one host, or a Pi also running its sensors).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys

from broker.errors import BusError
from fleet_center.config import CenterConfig
from fleet_center.service import CenterService
from runtime.roles import command_line_error, configure_logging, run_service, settings_parser
from runtime.settings import ConfigError, load


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pipeline"]:  # pipeline inference (issue 18): run once, or serve POST /pipeline
        from fleet_center.pipeline_cli import main as pipeline_main

        return pipeline_main(argv[1:])
    args = settings_parser("python -m fleet_center", __doc__, "center").parse_args(argv)
    configure_logging("center")
    try:
        config = load(CenterConfig, args.config, overrides=args.set, section="center")
        return run_service(CenterService(config))
    except (ConfigError, BusError) as error:
        return command_line_error(error)


if __name__ == "__main__":
    sys.exit(main())
