"""The center's artifact server: model files over HTTP (Range, ETag = sha256) and the deploy commands naming them.

Routes (GET and HEAD):
  /models/{model_id}/index.json      the model's index: every file with size, sha256 and URL (JSON)
  /models/{model_id}/files/{name}    one file named by the model's manifest (or manifest.json itself)

A deploy command carries the index URL and the sha256 of the index bytes; the index carries the sha256
of every file, taken from the model's manifest. So one hash in an authenticated MQTT message pins every
byte the edge installs (docs/deployment.md). The index is a pure function of the store, so the server
keeps no state besides counters. Every index response carries the center's ed25519 signature of its
bytes (header `X-Edgefleet-Signature`), which an edge checks with the center's public key before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import select
import sys
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from broker.messages.membership import NodeCommand
from models.artifact_index import FILE_NAME, IndexEntry, ModelIndex
from models.errors import ManifestError, UnknownModelError
from models.manifest import MANIFEST_NAME, Manifest
from runtime.settings import FLEET_DIR
from security.signing import SIGNATURE_HEADER, Signer

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
# One path segment: no separators, no leading dot (so no ".", ".." or hidden files), bounded length.
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SEND_CHUNK_BYTES = 8 * 1024 * 1024
_SERVED_LOG_SIZE = 10_000


class RangeNotSatisfiable(ValueError):
    """The Range header asks for bytes past the end of the file (HTTP 416)."""


class RefusedPath(ValueError):
    """The request path is malformed or tries to leave the store (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class ArtifactServerConfig:
    """Where the artifact server listens and how patient it is."""

    host: str = "127.0.0.1"  # bind address; 0.0.0.0 to serve other hosts
    port: int = 0  # TCP port; 0 = any free port
    public_url: str = ""  # base URL edges use (e.g. http://center.lan:8700); "" = http://host:port
    request_timeout_s: float = 30.0  # a connection silent this long (reading or writing) is dropped
    # ed25519 key signing every index (created at first start, `.pub` next to it for edges; docs/security.md)
    signing_key_file: str = str(FLEET_DIR / "secrets" / "center_signing.key")


@dataclass(frozen=True, slots=True)
class ServedRange:
    """One file response, recorded so tests and benchmarks can prove a resume did not start over."""

    model_id: str
    file_name: str
    status: int  # 200 or 206
    start: int  # first byte offset sent
    bytes_sent: int  # bytes handed to the kernel before the response ended or the peer left


def check_segment(segment: str) -> str:
    """Return `segment` if it is a safe single path segment. Raises RefusedPath."""
    if not FILE_NAME.match(segment):
        raise RefusedPath(f"refused path segment {segment!r}")
    return segment


def read_manifest(store_root: Path, model_id: str) -> tuple[Manifest, bytes]:
    """The model's manifest and its raw bytes. Raises RefusedPath, UnknownModelError, ManifestError."""
    path = Path(store_root) / check_segment(model_id) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UnknownModelError(f"no model {model_id!r} in store {store_root}") from None
    except OSError as error:
        raise ManifestError(f"cannot read {path}: {error}") from error
    manifest = Manifest.from_json(raw.decode(errors="replace"), str(path))
    if manifest.id != model_id:
        raise ManifestError(f"{path} names model {manifest.id!r}, expected {model_id!r}")
    return manifest, raw


def build_index(store_root: Path | str, model_id: str) -> ModelIndex:
    """Index of `model_id`: its manifest's files plus manifest.json. Raises UnknownModelError, ManifestError.

    File hashes come from the manifest, not from hashing the files now: the manifest is what the model's
    writer vouched for, so a file changed on the center after preparation is caught by the edge.
    """
    manifest, raw = read_manifest(Path(store_root), model_id)
    manifest_sha = hashlib.sha256(raw).hexdigest()
    entries = [IndexEntry(name, entry.bytes, entry.sha256, f"files/{name}") for name, entry in manifest.files.items()]
    entries.append(IndexEntry(MANIFEST_NAME, len(raw), manifest_sha, f"files/{MANIFEST_NAME}"))
    for entry in entries:
        check_segment(entry.name)  # a manifest naming "../x" must not turn into a URL that escapes
    return ModelIndex(model_id, manifest_sha[:16], tuple(sorted(entries, key=lambda e: e.name)))


def index_url(base_url: str, model_id: str) -> str:
    return f"{base_url.rstrip('/')}/models/{model_id}/{INDEX_NAME}"


def build_deploy_command(
    store_root: Path | str, base_url: str, model_id: str, command_id: str | None = None, pin: bool = False
) -> NodeCommand:
    """The `deploy_model` command for `model_id`: url = its index, sha256 = sha256 of the index bytes.

    Raises UnknownModelError, ManifestError, RefusedPath (a model id that is not one path segment).
    """
    index = build_index(store_root, model_id)
    return NodeCommand(
        command_id=command_id or f"deploy-{model_id}-{uuid.uuid4().hex[:12]}",
        kind="deploy_model",
        model_id=model_id,
        model_version=index.model_version,
        sha256=index.sha256,
        url=index_url(base_url, model_id),
        pin=pin,
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end_exclusive) for a single `bytes=` range, or None to send the whole file.

    Multiple ranges and malformed headers are ignored (RFC 9110 allows answering 200 with the whole
    file). Raises RangeNotSatisfiable when the range starts at or past the end.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable(f"empty suffix range {header!r}")
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise RangeNotSatisfiable(f"range {header!r} outside a file of {size} bytes")
    return start, end


def parse_route(raw_path: str) -> tuple[str, str | None] | None:
    """(model_id, file name or None for the index), or None if no route matches. Raises RefusedPath.

    Segments are split before percent-decoding, so an encoded '/' or '..' stays one segment and is refused.
    """
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    segments = [unquote(segment) for segment in path.split("/")]
    if len(segments) < 3 or segments[0] != "" or segments[1] != "models":
        return None
    for segment in segments[2:]:
        check_segment(segment)
    if len(segments) == 4 and segments[3] == INDEX_NAME:
        return segments[2], None
    if len(segments) == 5 and segments[3] == "files":
        return segments[2], segments[4]
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store_root: Path, config: ArtifactServerConfig) -> None:
        self.store_root = store_root
        self.config = config
        self.lock = threading.Lock()
        self.signer = Signer.load_or_create(config.signing_key_file)
        self.served: deque[ServedRange] = deque(maxlen=_SERVED_LOG_SIZE)
        self.bytes_served = 0
        super().__init__((config.host, config.port), _Handler)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # socketserver prints tracebacks to stderr; a peer that hangs up is routine, anything else is an error.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            logger.info("artifacts: connection from %s ended: %r", client_address[0], error)
        else:
            logger.error("artifacts: request from %s failed: %r", client_address[0], error)

    def record(self, served: ServedRange) -> None:
        with self.lock:
            self.served.append(served)
            self.bytes_served += served.bytes_sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection carries the index and every file
    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.config.request_timeout_s
        super().setup()

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _refuse_method(self) -> None:
        """405 rather than the standard library's 501: the server works, the client asked for what it never serves."""
        body = json.dumps({"error": f"method {self.command} not allowed; GET or HEAD"}).encode()
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("artifacts %s: %s", self.client_address[0], format % args)

    def _respond(self, head: bool) -> None:
        try:
            route = parse_route(self.path)
            if route is None:
                self._error(404, f"no route {self.path!r}")
                return
            model_id, file_name = route
            if file_name is None:
                self._send_index(model_id, head)
            else:
                self._send_file(model_id, file_name, head)
        except RefusedPath as error:
            logger.warning("artifacts: refused %.200r from %s: %.200s", self.path, self.client_address[0], error)
            self._error(400, str(error))
        except UnknownModelError as error:
            self._error(404, str(error))
        except ManifestError as error:
            logger.error("artifacts: %s", error)
            self._error(500, str(error))

    def _send_index(self, model_id: str, head: bool) -> None:
        index = build_index(self.server.store_root, model_id)
        body = index.to_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{index.sha256}"')
        self.send_header(SIGNATURE_HEADER, self.server.signer.sign(body))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_file(self, model_id: str, file_name: str, head: bool) -> None:
        manifest, raw = read_manifest(self.server.store_root, model_id)
        if file_name == MANIFEST_NAME:
            sha256 = hashlib.sha256(raw).hexdigest()
        elif file_name in manifest.files:
            sha256 = manifest.files[file_name].sha256
        else:  # only files the manifest names are served: nothing else in the store leaks
            self._error(404, f"model {model_id!r} has no file {file_name!r}")
            return
        root = self.server.store_root.resolve()
        path = (root / model_id / file_name).resolve()
        if not path.is_relative_to(root):  # a symlink pointing out of the store
            raise RefusedPath(f"{model_id}/{file_name} resolves outside the store")
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            self._error(404, f"model {model_id!r}: file {file_name!r} is missing on the center")
            return
        with handle:
            self._send_body(handle, model_id, file_name, sha256, head)

    def _send_body(self, handle: BinaryIO, model_id: str, file_name: str, sha256: str, head: bool) -> None:
        size = os.fstat(handle.fileno()).st_size
        etag = f'"{sha256}"'
        if_range = self.headers.get("If-Range")
        byte_range = None
        try:
            # If-Range: resume only if the client's partial copy is of this very file, else send it whole.
            if if_range is None or if_range.strip() == etag:
                byte_range = parse_range(self.headers.get("Range"), size)
        except RangeNotSatisfiable as error:
            self.send_response(416, str(error))
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = byte_range or (0, size)
        status = 206 if byte_range else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if byte_range:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        sent = self._sendfile(handle, start, end - start)
        self.server.record(ServedRange(model_id, file_name, status, start, sent))

    def _sendfile(self, handle: BinaryIO, offset: int, count: int) -> int:
        """Zero-copy send of `count` bytes; returns how many left before the peer hung up."""
        self.wfile.flush()
        sock = self.connection
        sent = 0
        try:
            while sent < count:
                try:
                    n = os.sendfile(sock.fileno(), handle.fileno(), offset + sent, min(count - sent, _SEND_CHUNK_BYTES))
                except BlockingIOError:  # the socket has a timeout, so it is non-blocking underneath
                    if not select.select([], [sock], [], self.timeout)[1]:
                        raise TimeoutError("peer stopped reading") from None
                    continue
                if n == 0:  # file shrank under us
                    break
                sent += n
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as error:
            logger.info("artifacts: %s stopped after %d of %d bytes: %s", self.client_address[0], sent, count, error)
        if sent < count:
            self.close_connection = True  # Content-Length promised more: the connection is unusable
        return sent

    def _error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class ArtifactServer:
    """Serves the center's model store over HTTP from a background thread. Use start()/stop() or `with`."""

    def __init__(self, store_root: Path | str, config: ArtifactServerConfig | None = None) -> None:
        """Binds at once (so `port` is known). Raises OSError if the address is taken."""
        self.store_root = Path(store_root)
        self.config = config or ArtifactServerConfig()
        self._server = _Server(self.store_root, self.config)
        # A short poll interval makes stop() quick; the idle cost is ten wake-ups a second.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="artifact-server",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = "127.0.0.1" if self.config.host in ("", "0.0.0.0") else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def bytes_served(self) -> int:
        return self._server.bytes_served

    def served(self) -> list[ServedRange]:
        """File responses so far (the last 10,000), oldest first."""
        with self._server.lock:
            return list(self._server.served)

    def deploy_command(self, model_id: str, command_id: str | None = None, pin: bool = False) -> NodeCommand:
        """The deploy command for `model_id` served from here. Raises UnknownModelError, ManifestError."""
        return build_deploy_command(self.store_root, self.base_url, model_id, command_id, pin)

    def start(self) -> ArtifactServer:
        self._thread.start()
        logger.info("artifact server on %s serving %s", self.base_url, self.store_root)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ArtifactServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
