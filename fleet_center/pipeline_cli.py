"""`python -m fleet_center pipeline run|serve`: one pipeline generation from the command line, or the HTTP API."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from broker.client import BusClient
from broker.config import BusConfig
from broker.errors import BusError
from fleet_center.pipeline_api import (
    BadPipelineRequest,
    PipelineApiConfig,
    PipelineHttpServer,
    PipelineService,
)
from metrics.config import StoreConfig
from metrics.errors import StoreError
from metrics.store import open_store
from models.paths import default_store_root
from models.store import ModelStore
from pipeline.coordinator import PipelineError

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser("python -m fleet_center pipeline", description=__doc__)
    root.add_argument("--host", default="127.0.0.1", help="broker host")
    root.add_argument("--port", type=int, default=1883, help="broker port")
    root.add_argument("--user", default="center", help="broker user (its password from the fleet's secrets)")
    root.add_argument("--password-file", default="", help="{node} = user; default: the fleet's secrets")
    root.add_argument("--store", default=str(default_store_root()), help="model store (config and tokenizer)")
    root.add_argument("--influx-url", default="", help="record per-node per-token figures to this InfluxDB 1.x")
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="generate once and print the result as JSON")
    run.add_argument("--model", default="smollm2-135m")
    run.add_argument("--nodes", required=True, help="stage nodes in ring order, comma separated")
    run.add_argument("--allocation", default="auto", help="'auto' or layers per node, e.g. 5,1,24")
    run.add_argument("--prompt", required=True)
    run.add_argument("--max-new-tokens", type=int, default=32)
    run.add_argument("--reallocation", choices=("on", "off"), default="on")
    run.add_argument("--threshold", type=float, default=0.15)
    run.add_argument("--min-tokens", type=int, default=8)
    run.add_argument("--performance-weight", type=float, default=0.3)
    run.add_argument("--kv-mode", choices=("transfer", "recompute"), default="transfer")
    serve = commands.add_parser("serve", help="serve POST /pipeline until interrupted")
    serve.add_argument("--http-host", default="127.0.0.1")
    serve.add_argument("--http-port", type=int, default=8091)
    return root


def body_of(args: argparse.Namespace) -> dict:
    allocation = "auto" if args.allocation == "auto" else [int(part) for part in args.allocation.split(",")]
    return {"model_id": args.model, "nodes": args.nodes.split(","), "allocation": allocation, "prompt": args.prompt,
            "max_new_tokens": args.max_new_tokens, "kv_mode": args.kv_mode,
            "reallocation": {"enabled": args.reallocation == "on", "threshold": args.threshold,
                             "min_tokens": args.min_tokens, "performance_weight": args.performance_weight}}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bus_config = BusConfig(host=args.host, port=args.port)
    if args.password_file:
        bus_config = BusConfig(host=args.host, port=args.port, password_file=args.password_file)
    record = None
    if args.influx_url:
        metric_store = open_store(StoreConfig(url=args.influx_url))
        metric_store.ensure_database()
        record = metric_store.write
    try:
        with BusClient(args.user, bus_config.for_node(args.user)) as bus:
            service = PipelineService(bus, ModelStore(args.store), record=record)
            if args.command == "run":
                print(json.dumps(service.run(body_of(args)), indent=2))  # noqa: T201 - a CLI
                return 0
            server = PipelineHttpServer(service, PipelineApiConfig(args.http_host, args.http_port)).start()
            print(f"pipeline API at {server.url}", flush=True)  # noqa: T201 - a CLI
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            while not stop.wait(0.5):
                pass
            server.stop()
            return 0
    except (BadPipelineRequest, PipelineError, BusError, StoreError, ValueError) as error:
        print(f"python -m fleet_center pipeline: {error}", file=sys.stderr)  # noqa: T201 - a CLI
        return 2
