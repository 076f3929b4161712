"""The installer's command line: `install`, `uninstall` and `unit` (print the unit it would write)."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import platform
import socket
import sys
from pathlib import Path

from edge_node.install.plan import (
    TORCH_CPU_INDEX,
    InstallOptions,
    Layout,
    check_node_id,
    machine_memory_mb,
    render_unit,
)
from edge_node.install.steps import InstallError, Secrets, install, uninstall

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parents[2]  # the tree this installer runs from (a checkout or the bundle)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m edge_node.install", description=__doc__)
    parser.add_argument("action", choices=("install", "uninstall", "unit"))
    parser.add_argument("--prefix", default="/", help="install under this directory instead of / (tests, images)")
    parser.add_argument("--node-id", default=socket.gethostname().split(".")[0], help="default: the hostname")
    parser.add_argument("--broker", default="", help="host[:port] of the fleet's broker")
    parser.add_argument("--password", default=os.environ.get("EDGEFLEET_BUS_PASSWORD", ""),
                        help="the node's broker password (from `python -m fleet_center.enroll`)")
    parser.add_argument("--password-file", help="read the password from this file instead")
    parser.add_argument("--ca-file", help="the fleet CA certificate: connect to the broker over TLS")
    parser.add_argument("--ca-b64", default="", help="the fleet CA certificate (PEM, base64), as enroll prints it")
    parser.add_argument("--cert-file", help="this node's client certificate (brokers with tls_client_certs)")
    parser.add_argument("--key-file", help="its private key")
    parser.add_argument("--center-key-b64", default="", help="the center's signing public key (PEM, base64)")
    parser.add_argument("--http-host", default="0.0.0.0")
    parser.add_argument("--http-port", type=int, default=8081)
    parser.add_argument("--memory-mb", type=int, help="default: MemTotal of /proc/meminfo")
    parser.add_argument("--python", default="", help="run the edge with this interpreter; no venv is built")
    parser.add_argument("--torch-index", default=TORCH_CPU_INDEX,
                        help="extra pip index for CPU torch on x86_64 ('' = only pip's configured indexes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parser().parse_args(argv)
    layout = Layout(Path(args.prefix))
    try:
        if args.action == "uninstall":
            removed = uninstall(layout)
            print(f"removed {len(removed)} paths; the edge is uninstalled")  # noqa: T201 - CLI
            return 0
        options = _options(args)
        if args.action == "unit":
            print(render_unit(layout, options), end="")  # noqa: T201 - CLI
            return 0
        password = Path(args.password_file).read_text().strip() if args.password_file else args.password
        if not password:
            raise InstallError("no broker password: give --password or --password-file (from the center's enroll)")
        edge_secrets = Secrets(password, _ca(args), _decode(args.center_key_b64),
                               Path(args.cert_file).read_text() if args.cert_file else "",
                               Path(args.key_file).read_text() if args.key_file else "")
        install(layout, options, SOURCE_DIR, edge_secrets, create_venv=not args.python)
    except (InstallError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201 - CLI
        return 2
    print(f"edge {options.node_id} installed; its unit: {layout.unit_file}")  # noqa: T201 - CLI
    return 0


def _ca(args: argparse.Namespace) -> str:
    return Path(args.ca_file).read_text() if args.ca_file else _decode(args.ca_b64)


def _decode(text: str) -> str:
    return base64.b64decode(text).decode() if text else ""


def _options(args: argparse.Namespace) -> InstallOptions:
    host, _, port = args.broker.partition(":")
    if not host:
        raise InstallError("--broker host[:port] is required")
    if bool(args.cert_file) != bool(args.key_file):
        raise InstallError("--cert-file and --key-file go together")
    memory_mb = args.memory_mb or machine_memory_mb(Path("/proc/meminfo").read_text())
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())
    return InstallOptions(node_id=check_node_id(args.node_id), broker_host=host, broker_port=int(port or 1883),
                          memory_mb=memory_mb, cores=os.cpu_count() or 1, arch=arch, http_host=args.http_host,
                          http_port=args.http_port, tls=bool(args.ca_file or args.ca_b64),
                          client_certificate=bool(args.cert_file), python=args.python, torch_index=args.torch_index)
