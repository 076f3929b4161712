"""Enrolling a new edge from the center host: its broker password, the edge bundle, and the one line for the Pi.

`python -m fleet_center.enroll pi-04 --center-host center.lan` derives pi-04's broker password from the
fleet secret (the same one the broker launcher uses), packs the edge's source into a bundle, prints
the line to run as root on the Pi (and, with `--cloud-init FILE`, writes user-data for Raspberry Pi
Imager that runs it on first boot), then serves the bundle over HTTP until stopped (`--no-serve`:
only print). The line holds the node's password, as `kubeadm join` holds its token: paste it, do not
keep it. The broker accepts the node once it is among its edge users (docs/pi.md).
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import shlex
import sys
import tarfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from broker.credentials import load_or_create_secret, node_password, write_node_password_files
from edge_node.install.plan import EDGE_SOURCE, check_node_id, render_cloud_init
from runtime.settings import FLEET_DIR, REPO_ROOT

logger = logging.getLogger(__name__)

BUNDLE_NAME = "edgefleet-edge.tar.gz"
BUNDLE_EXTRAS = ("requirements.txt", "docs/pi.md")


@dataclass(frozen=True, slots=True)
class Enrollment:
    node_id: str
    password: str
    install_line: str


def bundle_bytes(source_dir: Path = REPO_ROOT) -> bytes:
    """A tar.gz of what an edge runs: its packages (no tests, caches or images), requirements and docs/pi.md."""
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name
        if "__pycache__" in name or name.endswith((".pyc", ".png")):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in (*EDGE_SOURCE, *BUNDLE_EXTRAS):
            if (source_dir / name).exists():
                archive.add(source_dir / name, arcname=name, filter=keep)
    return buffer.getvalue()


def install_line(node_id: str, password: str, bundle_url: str, broker: str, center_key_pem: str = "",
                 ca_pem: str = "") -> str:
    """The one line to run on the Pi: fetch the bundle, unpack it, run its installer as root."""
    args = ["python3", "-m", "edge_node.install", "install", "--node-id", node_id, "--broker", broker]
    for flag, pem in (("--center-key-b64", center_key_pem), ("--ca-b64", ca_pem)):
        if pem:
            args += [flag, base64.b64encode(pem.encode()).decode()]
    work = "/tmp/edgefleet-edge"
    inner = (f"rm -rf {work} && mkdir -p {work} && tar -xz -C {work} && cd {work} && "
             f"EDGEFLEET_BUS_PASSWORD={shlex.quote(password)} {shlex.join(args)}")
    return f"curl -fsSL {shlex.quote(bundle_url)} | sudo sh -c {shlex.quote(inner)}"


def enroll(node_id: str, secrets_dir: Path, bundle_url: str, broker: str, ca_file: Path | None = None) -> Enrollment:
    """Derive and write the node's password (secrets/<node>.password) and compose its install line (with the
    center's signing key, and the fleet CA when the broker is reached over TLS)."""
    check_node_id(node_id)
    password = node_password(load_or_create_secret(secrets_dir / "fleet.key"), node_id)
    write_node_password_files(secrets_dir, {node_id: password})
    key_file = secrets_dir / "center_signing.pub"
    center_key = key_file.read_text() if key_file.is_file() else ""
    ca = ca_file.read_text() if ca_file else ""
    return Enrollment(node_id, password, install_line(node_id, password, bundle_url, broker, center_key, ca))


def serve_bundle(bundle: bytes, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering GET /edgefleet-edge.tar.gz with the bundle (404 for anything else)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != f"/{BUNDLE_NAME}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(bundle)))
            self.end_headers()
            self.wfile.write(bundle)
            logger.info("bundle sent to %s", self.client_address[0])

        def log_message(self, format: str, *args: object) -> None:
            logger.debug(format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet_center.enroll", description=__doc__)
    parser.add_argument("node_id")
    parser.add_argument("--center-host", required=True, help="the center's address as the Pi reaches it")
    parser.add_argument("--broker-port", type=int, default=1883, help="8883 with --ca-file (the TLS listener)")
    parser.add_argument("--ca-file", help="the fleet CA (.fleet/tls/ca.crt): the Pi connects over TLS")
    parser.add_argument("--serve-port", type=int, default=8710, help="port the bundle is served on")
    parser.add_argument("--secrets-dir", default=str(FLEET_DIR / "secrets"))
    parser.add_argument("--cloud-init", help="also write cloud-init user-data (Raspberry Pi Imager) to this file")
    parser.add_argument("--no-serve", action="store_true", help="print the line and exit (serve the bundle elsewhere)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s enroll %(levelname)s %(message)s")
    url = f"http://{args.center_host}:{args.serve_port}/{BUNDLE_NAME}"
    try:
        enrollment = enroll(args.node_id, Path(args.secrets_dir), url, f"{args.center_host}:{args.broker_port}",
                            Path(args.ca_file) if args.ca_file else None)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201 - CLI
        return 2
    if args.cloud_init:
        Path(args.cloud_init).write_text(render_cloud_init(enrollment.install_line, enrollment.node_id))
        Path(args.cloud_init).chmod(0o600)
    print(f"# run as root on {enrollment.node_id} (the broker must list it among edge_users, docs/pi.md):")  # noqa: T201
    print(enrollment.install_line)  # noqa: T201 - the line the operator pastes
    if args.no_serve:
        return 0
    server = serve_bundle(bundle_bytes(), "0.0.0.0", args.serve_port)
    logger.info("serving %s on port %d until Ctrl-C", BUNDLE_NAME, args.serve_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
