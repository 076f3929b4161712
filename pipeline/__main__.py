"""`python -m pipeline --node pi-01`: run one pipeline stage node until interrupted, optionally emulating a slower CPU."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see edge_node/__main__.py)

import argparse
import logging
import signal
import sys
import threading

from broker.config import BusConfig
from broker.errors import BusError
from emulation.cpu_quota import limit_cpu
from emulation.pass_delay import PassDelay
from models.paths import default_store_root
from models.store import ModelStore
from pipeline.node import start_stage_node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m pipeline", description=__doc__)
    parser.add_argument("--node", required=True, help="node id (also its broker user)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--password-file", default="", help="{node} = node id; default: the fleet's secrets")
    parser.add_argument("--store", default=str(default_store_root()), help="model store root")
    parser.add_argument("--cpu-quota", type=float, default=0.0, help="cgroup CPU quota, fraction of one core (0 = none)")
    parser.add_argument("--quota-file", default="", help="emulate a slower CPU: a file holding the speed fraction")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.node} %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    limit = limit_cpu(args.cpu_quota, f"pipeline-{args.node}")
    config = BusConfig(host=args.host, port=args.port, keepalive_s=2)
    if args.password_file:
        config = BusConfig(host=args.host, port=args.port, keepalive_s=2, password_file=args.password_file)
    delay = PassDelay(args.quota_file) if args.quota_file else None
    try:
        node = start_stage_node(args.node, config, ModelStore(args.store), after_compute=delay,
                                on_model_loaded=lambda model: limit.install_on_layers(model.model.model.layers))
    except BusError as error:
        print(f"python -m pipeline: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"stage {args.node} ready", flush=True)
    while not stop.wait(0.5):
        pass
    node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
