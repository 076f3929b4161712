"""Edge side of model deployment: fetch a model from the center's artifact server, verify it, install it atomically.

A `deploy_model` command names the model's index (url) and the index's sha256. The deployer checks the
index against that hash, downloads every file into `<store>/.deploy/<model_id>/` (resuming a partial
file with a Range request), checks each file's size and sha256 against the index, and only then swaps
the directory into the store with renames. Anything that fails leaves the installed copy untouched.
Progress, verifying, ready and failed (with a reason) go to a status callback, normally the bus topic
`models/{node}/status` (see `bus_status_publisher`). docs/deployment.md has the whole protocol.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import httpx

from broker import topics
from broker.client import BusClient
from broker.messages import ModelStatus, NodeCommand
from broker.messages.tasks import ModelState
from edge_node.deploy_errors import DeployError, DeployFailed, TransientDeployError
from edge_node.model_install import (
    install_staged,
    installed_matches,
    prepare_staging,
    recover_interrupted_install,
    verify_staged,
)
from models.artifact_index import FILE_NAME, IndexEntry, IndexFormatError, ModelIndex
from models.artifact_index import parse_index as parse_model_index
from runtime.settings import FLEET_DIR
from security.signing import SIGNATURE_HEADER, SignatureError, load_public_key, verify

logger = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}

T = TypeVar("T")
StatusCallback = Callable[[ModelStatus], None]
ClientFactory = Callable[[], httpx.Client]


@dataclass(frozen=True, slots=True)
class DeployConfig:
    """How patient and how chatty the deployer is."""

    connect_timeout_s: float = 5.0  # TCP connect to the artifact server
    read_timeout_s: float = 30.0  # longest silence inside one response before the attempt counts as failed
    attempts: int = 5  # tries per file (and for the index) before the deploy fails
    backoff_initial_s: float = 0.5  # wait before the 2nd try; doubles per try
    backoff_max_s: float = 8.0  # cap of that wait
    progress_interval_s: float = 0.5  # at most one `downloading` status per this interval
    index_max_bytes: int = 1024 * 1024  # a bigger index is refused (it lists a handful of files)
    workers: int = 2  # deploys of different models that may run at once
    # The center's ed25519 public key (hex): an index without its valid signature is refused (docs/security.md)
    center_public_key_file: str = str(FLEET_DIR / "secrets" / "center_signing.pub")

    def __post_init__(self) -> None:
        """Raises ValueError naming the bad field."""
        for name in ("attempts", "workers", "index_max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"DeployConfig.{name} must be >= 1")
        for name in ("connect_timeout_s", "read_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DeployConfig.{name} must be > 0")


@dataclass(frozen=True, slots=True)
class DeployOutcome:
    """How one deploy ended; shared by every command coalesced into it."""

    model_id: str
    state: Literal["ready", "failed"]
    reason: str = ""
    bytes_downloaded: int = 0  # bytes received over HTTP in this deploy (resumed bytes not counted)
    seconds: float = 0.0


def parse_index(raw: bytes, index_url: str, model_id: str) -> ModelIndex:
    """Decode the artifact server's index.json. Raises DeployFailed naming what is wrong."""
    try:
        return parse_model_index(raw, index_url, model_id)
    except IndexFormatError as error:
        raise DeployFailed(str(error)) from error


def bus_status_publisher(bus: BusClient) -> StatusCallback:
    """A status callback that publishes on `models/{node}/status` (QoS 1)."""

    def publish(status: ModelStatus) -> None:
        bus.publish(topics.MODEL_STATUS, status, node=status.node_id)

    return publish


@dataclass
class _Job:
    command: NodeCommand
    future: Future[DeployOutcome]
    command_ids: list[str] = field(default_factory=list)


class _Progress:
    """Bytes on disk (finished files + the current file) out of the model's total, reported at most once per interval."""

    def __init__(self, report: Callable[[float], None], total_bytes: int, interval_s: float) -> None:
        self.report = report
        self.total_bytes = max(1, total_bytes)
        self.interval_s = interval_s
        self.finished_bytes = 0
        self.current_bytes = 0
        self._last_at = 0.0

    def start_file(self, bytes_on_disk: int) -> None:
        self.current_bytes = bytes_on_disk
        self._maybe_report()

    def add(self, count: int) -> None:
        self.current_bytes += count
        self._maybe_report()

    def finish_file(self, size_bytes: int) -> None:
        self.finished_bytes += size_bytes
        self.current_bytes = 0

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if now - self._last_at >= self.interval_s:
            self._last_at = now
            self.report(min(1.0, (self.finished_bytes + self.current_bytes) / self.total_bytes))


class ModelDeployer:
    """Runs deploy commands on a small thread pool; wire `handle` as `presence.command_handlers["deploy_model"]`."""

    def __init__(
        self,
        node_id: str,
        store_root: Path | str,
        on_status: StatusCallback,
        config: DeployConfig | None = None,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`client_factory` makes the httpx.Client of one deploy (tests inject transports); `clock` stamps statuses."""
        self.node_id = node_id
        self.store_root = Path(store_root)
        self.on_status = on_status
        self.config = config or DeployConfig()
        self.client_factory = client_factory or self._default_client
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], _Job] = {}  # (model id, index sha256) -> deploy in flight
        self._model_locks: dict[str, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix=f"deploy-{node_id}")

    def handle(self, command: NodeCommand) -> None:
        """Command handler: starts the deploy in the background and returns at once (the bus thread must not block)."""
        self.submit(command)

    def submit(self, command: NodeCommand) -> Future[DeployOutcome]:
        """Start (or join) the deploy of `command`. An identical deploy in flight is joined, not repeated.

        Raises RuntimeError after close(). The future never raises: failures are a "failed" outcome.
        """
        key = (command.model_id, command.sha256)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                job.command_ids.append(command.command_id)
                logger.info("%s: deploy %s of %s joins one in flight", self.node_id, command.command_id, command.model_id)
                return job.future
            job = _Job(command, Future(), [command.command_id])
            self._jobs[key] = job
        try:
            self._pool.submit(self._run_job, key, job)
        except RuntimeError:  # closed: forget the job so a later deployer instance is not blocked
            with self._lock:
                self._jobs.pop(key, None)
            raise
        return job.future

    def deploy(self, command: NodeCommand, timeout_s: float | None = None) -> DeployOutcome:
        """Deploy and wait. Raises concurrent.futures.TimeoutError if `timeout_s` passes first."""
        return self.submit(command).result(timeout_s)

    def close(self) -> None:
        """Wait for running deploys; no new ones start."""
        self._pool.shutdown(wait=True)

    # ---- one deploy ------------------------------------------------------------------------------

    def _run_job(self, key: tuple[str, str], job: _Job) -> None:
        command = job.command
        started = time.monotonic()
        with self._lock:
            model_lock = self._model_locks.setdefault(command.model_id, threading.Lock())
        received = [0]
        try:
            with model_lock:  # two versions of one model deploy one after the other, never interleaved
                self._deploy(command, received)
            outcome = DeployOutcome(command.model_id, "ready", "", received[0], time.monotonic() - started)
        except DeployError as error:
            outcome = DeployOutcome(command.model_id, "failed", str(error), received[0], time.monotonic() - started)
        except OSError as error:  # disk full, permissions: the edge's problem, reported like any other
            outcome = DeployOutcome(command.model_id, "failed", f"edge disk error: {error}", received[0],
                                    time.monotonic() - started)
        except Exception as error:  # a bug must still end in a failed status, not a silent hang
            logger.exception("%s: deploy of %s crashed", self.node_id, command.model_id)
            outcome = DeployOutcome(command.model_id, "failed", f"internal error: {error!r}", received[0],
                                    time.monotonic() - started)
        with self._lock:
            self._jobs.pop(key, None)
            command_ids = list(job.command_ids)
        for command_id in command_ids:
            self._status(command.model_id, outcome.state, command_id, 1.0 if outcome.state == "ready" else 0.0,
                         outcome.reason)
        log = logger.info if outcome.state == "ready" else logger.warning
        log("%s: deploy of %s %s in %.2f s (%d bytes received)%s", self.node_id, command.model_id, outcome.state,
            outcome.seconds, outcome.bytes_downloaded, f": {outcome.reason}" if outcome.reason else "")
        job.future.set_result(outcome)

    def _deploy(self, command: NodeCommand, received: list[int]) -> None:
        """Raises DeployFailed or TransientDeployError (after the last retry)."""
        model_id = command.model_id
        if not FILE_NAME.match(model_id):
            raise DeployFailed(f"model id {model_id!r} is not a valid directory name")
        if not command.url or len(command.sha256) != 64:
            raise DeployFailed("deploy command needs the index url and its sha256")
        self._status(model_id, "downloading", command.command_id)
        recover_interrupted_install(self.store_root, model_id)
        with self.client_factory() as client:
            raw_index = self._retry(f"index {command.url}", lambda: self._get_index(client, command))
            index = parse_index(raw_index, command.url, model_id)
            if installed_matches(self.store_root, index):
                logger.info("%s: %s version %s already installed and verified", self.node_id, model_id, index.model_version)
                return
            staging = prepare_staging(self.store_root, model_id, raw_index)
            progress = _Progress(partial(self._status, model_id, "downloading", command.command_id),
                                 index.total_bytes, self.config.progress_interval_s)
            hashed: set[str] = set()
            for remote in index.files:
                if self._download(client, remote, staging, progress, received):
                    hashed.add(remote.name)
        self._status(model_id, "verifying", command.command_id, 1.0)
        verify_staged(index, staging, hashed)
        install_staged(self.store_root, model_id, staging)

    def _get_index(self, client: httpx.Client, command: NodeCommand) -> bytes:
        with client.stream("GET", command.url) as response:
            self._check_status(response, f"index of {command.model_id!r}")
            body = bytearray()
            for chunk in response.iter_raw(64 * 1024):
                body += chunk
                if len(body) > self.config.index_max_bytes:
                    raise DeployFailed(f"index at {command.url} is over {self.config.index_max_bytes} bytes")
        try:
            verify(load_public_key(self.config.center_public_key_file), bytes(body),
                   response.headers.get(SIGNATURE_HEADER))
        except SignatureError as error:
            raise DeployFailed(f"index of {command.model_id!r} refused: {error}; the installed copy stays") from error
        if hashlib.sha256(body).hexdigest() != command.sha256:
            raise DeployFailed(f"index of {command.model_id!r} does not match the command's sha256 "
                               "(the model changed on the center after the command was built)")
        return bytes(body)

    def _retry(self, what: str, attempt: Callable[[], T]) -> T:
        """Run `attempt` up to config.attempts times with exponential backoff on transient errors.

        Raises DeployFailed at once, TransientDeployError once the attempts are used up.
        """
        delay_s = self.config.backoff_initial_s
        for number in range(1, self.config.attempts + 1):
            try:
                return attempt()
            except (TransientDeployError, httpx.TransportError) as error:
                if number == self.config.attempts:
                    raise TransientDeployError(f"{what}: {error!r} (gave up after {number} attempts)") from error
                logger.info("%s: %s failed (%s); retry %d in %.1f s", self.node_id, what, error, number, delay_s)
                self.sleep(delay_s)
                delay_s = min(delay_s * 2, self.config.backoff_max_s)
        raise AssertionError("config.attempts >= 1, so the loop returns or raises")

    # ---- files -----------------------------------------------------------------------------------

    def _download(self, client: httpx.Client, remote: IndexEntry, staging: Path, progress: _Progress,
                  received: list[int]) -> bool:
        """Bring `remote` into `staging` verified. Returns False if it was already complete from an earlier run.

        Raises DeployFailed (sha256 or size mismatch, HTTP 4xx) or TransientDeployError (retries used up).
        """
        final = staging / remote.name
        if final.is_file() and final.stat().st_size == remote.bytes:
            progress.finish_file(remote.bytes)
            return False  # hashed again in verify_staged, since this run did not watch it being written
        part = staging / f"{remote.name}.part"
        restarted = [False]

        def attempt() -> None:
            digest, resumed = self._fetch_into(client, remote, part, progress, received)
            if digest == remote.sha256:
                return
            part.unlink()
            if resumed and not restarted[0]:
                # The prefix on disk came from an earlier attempt and may be what is wrong: once from zero.
                restarted[0] = True
                raise TransientDeployError(f"file {remote.name!r}: sha256 mismatch after resume; downloading it again")
            raise DeployFailed(f"file {remote.name!r}: sha256 {digest[:16]}... does not match the index "
                               f"({remote.sha256[:16]}...); not installed")

        self._retry(f"file {remote.name!r}", attempt)
        os.replace(part, final)
        progress.finish_file(remote.bytes)
        return True

    def _fetch_into(self, client: httpx.Client, remote: IndexEntry, part: Path, progress: _Progress,
                    received: list[int]) -> tuple[str, bool]:
        """One request: append the missing bytes of `remote` to `part`. Returns (sha256 of the whole part, resumed)."""
        offset = part.stat().st_size if part.exists() else 0
        if offset > remote.bytes:
            part.unlink()
            offset = 0
        digest = hashlib.sha256()
        if offset == remote.bytes:
            return _hash_prefix(part, digest, offset).hexdigest(), offset > 0
        headers = {"Range": f"bytes={offset}-", "If-Range": f'"{remote.sha256}"'} if offset else {}
        with client.stream("GET", remote.url, headers=headers) as response:
            if response.status_code == 416:
                part.unlink()  # our partial copy is longer than the center's file: start over
                raise TransientDeployError(f"file {remote.name!r}: range not satisfiable; restarting it")
            self._check_status(response, f"file {remote.name!r}")
            start = _response_start(response, remote)
            if start != offset:
                if start != 0:
                    raise TransientDeployError(f"file {remote.name!r}: asked for byte {offset}, got {start}")
                offset = 0  # a 200 to our Range request: the server sends the whole file
            resumed = offset > 0
            progress.start_file(offset)
            _hash_prefix(part, digest, offset)
            with part.open("r+b" if part.exists() else "wb") as handle:
                handle.seek(offset)
                handle.truncate()
                try:
                    # No chunk size: httpx would buffer up to it and lose the buffer when the link breaks.
                    for chunk in response.iter_raw():
                        if handle.tell() + len(chunk) > remote.bytes:
                            raise DeployFailed(f"file {remote.name!r}: center sent more than the {remote.bytes} bytes the index says")
                        handle.write(chunk)
                        digest.update(chunk)
                        received[0] += len(chunk)
                        progress.add(len(chunk))
                except httpx.TransportError as error:
                    raise TransientDeployError(f"file {remote.name!r}: transfer broke at {handle.tell()} of "
                                               f"{remote.bytes} bytes: {error!r}") from error
                finally:
                    handle.flush()
                    os.fsync(handle.fileno())  # bytes we resume from must really be on disk
                size = handle.tell()
        if size != remote.bytes:
            raise TransientDeployError(f"file {remote.name!r}: got {size} of {remote.bytes} bytes")
        return digest.hexdigest(), resumed

    @staticmethod
    def _check_status(response: httpx.Response, what: str) -> None:
        if response.status_code in (200, 206):
            return
        response.read()
        detail = response.text[:200]
        if response.status_code in _RETRY_STATUSES:
            raise TransientDeployError(f"{what}: HTTP {response.status_code} {detail}")
        raise DeployFailed(f"{what}: center answered HTTP {response.status_code} {detail}")

    # ---- plumbing --------------------------------------------------------------------------------

    def _status(self, model_id: str, state: ModelState, command_id: str, progress: float = 0.0,
                reason: str = "") -> None:
        try:
            status = ModelStatus(node_id=self.node_id, model_id=model_id, state=state, command_id=command_id, progress=progress, reason=reason[:1000],
                                 timestamp=self.clock())
            self.on_status(status)
        except Exception:  # a lost status must not abort the deploy; the final one is re-sent by a redeploy
            logger.exception("%s: could not report %s status of %s", self.node_id, state, model_id)

    def _default_client(self) -> httpx.Client:
        timeout = httpx.Timeout(self.config.read_timeout_s, connect=self.config.connect_timeout_s)
        return httpx.Client(timeout=timeout, follow_redirects=False)


def _response_start(response: httpx.Response, remote: IndexEntry) -> int:
    """First byte offset the response carries, after checking the total size. Raises DeployFailed."""
    if response.status_code == 200:
        total = int(response.headers.get("Content-Length", "-1"))
        start = 0
    else:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None:
            raise DeployFailed(f"file {remote.name!r}: 206 without a usable Content-Range")
        start, total = int(match.group(1)), int(match.group(3))
    if total >= 0 and total != remote.bytes:
        raise DeployFailed(f"file {remote.name!r}: center has {total} bytes, index says {remote.bytes}; not installed")
    return start


def _hash_prefix(part: Path, digest: hashlib._Hash, length: int) -> hashlib._Hash:
    """Feed the first `length` bytes already on disk into `digest` (a resume hashes what it keeps)."""
    if length == 0:
        return digest
    remaining = length
    with part.open("rb") as handle:
        while remaining:
            chunk = handle.read(min(remaining, 4 * 1024 * 1024))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest
