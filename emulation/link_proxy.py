"""A TCP proxy that puts an emulated link (delay and rate per direction) between a node and the broker.

In process: `LinkProxy(profile, upstream_host, upstream_port).start()` runs an asyncio loop on a daemon
thread and listens on `proxy.port`; `stop()` ends it. As a process:
`python -m emulation.link_proxy --profile wan --listen 127.0.0.1:0 --upstream 127.0.0.1:1883` prints
the port it listens on and runs until SIGINT/SIGTERM. Every accepted connection gets its own upstream
connection and two pumps (emulation/link_pump.py); limits are in docs/emulation.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from dataclasses import dataclass

from emulation.link_profiles import LinkProfile, get_profile
from emulation.link_pump import LinkPump

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Buffers of the proxy."""

    # Per direction and connection: bytes read but not yet sent. 512 KiB holds a 20 Mbit/s x 40 ms
    # bandwidth-delay product (100 KB) several times over, so the rate, not the buffer, limits a flow.
    buffer_bytes: int = 512 * 1024
    chunk_bytes: int = 16 * 1024  # largest single read: the unit the schedule delays and serializes
    start_timeout_s: float = 5.0  # start() waits this long for the listening socket
    connect_timeout_s: float = 10.0  # an accepted connection waits this long for the upstream


class LinkProxy:
    """Listens on `listen_host:port`; each connection is forwarded to the upstream through `profile`."""

    def __init__(self, profile: LinkProfile, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, config: ProxyConfig | None = None) -> None:
        self.profile = profile
        self.upstream = (upstream_host, upstream_port)
        self.host = listen_host
        self.port = listen_port  # the real port once started
        self.config = config or ProxyConfig()
        self.pumps: list[LinkPump] = []  # of open connections, for stats and tests
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"link-proxy-{profile.name}", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held by the proxy right now, all connections and directions."""
        return sum(pump.buffered_bytes for pump in self.pumps)

    def start(self) -> LinkProxy:
        """Listen and serve on a daemon thread. Raises OSError if the address cannot be bound."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        try:
            future.result(self.config.start_timeout_s)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        logger.info("link %s: listening on %s:%d, forwarding to %s:%d", self.profile.name, self.host, self.port,
                    *self.upstream)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the listening socket and every connection, then end the thread. Safe to call twice."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(timeout_s)
        except (TimeoutError, asyncio.CancelledError, OSError) as error:
            logger.warning("link %s: stopping took too long: %s", self.profile.name, error)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=self.config.chunk_bytes)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = client_writer.get_extra_info("peername")
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream, limit=self.config.chunk_bytes), self.config.connect_timeout_s)
        except (OSError, TimeoutError) as error:
            logger.warning("link %s: %s: cannot reach %s:%d: %s", self.profile.name, peer, *self.upstream, error)
            client_writer.close()
            self._tasks.discard(task)
            return
        name = f"link {self.profile.name} {peer}"
        up = LinkPump(f"{name} up", self.profile.up, client_reader, upstream_writer,
                      self.config.buffer_bytes, self.config.chunk_bytes)
        down = LinkPump(f"{name} down", self.profile.down, upstream_reader, client_writer,
                        self.config.buffer_bytes, self.config.chunk_bytes)
        self.pumps += [up, down]
        try:
            await asyncio.gather(up.run(), down.run())
        finally:
            client_writer.close()
            upstream_writer.close()
            self.pumps = [p for p in self.pumps if p not in (up, down)]
            self._tasks.discard(task)
            logger.debug("%s: closed (%d B up, %d B down)", name, up.bytes_through, down.bytes_through)


def start_link_proxy(profile_name: str, upstream_host: str, upstream_port: int) -> LinkProxy:
    """An in-process proxy on a free loopback port in front of the upstream. Raises ConfigError, OSError."""
    return LinkProxy(get_profile(profile_name), upstream_host, upstream_port).start()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """The proxy as a process; prints its listening port on the first stdout line."""
    parser = argparse.ArgumentParser(prog="python -m emulation.link_proxy", description=__doc__)
    parser.add_argument("--profile", required=True, help="lan, wan or cellular")
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0), help="host:port (port 0 = any free)")
    parser.add_argument("--upstream", type=_address, default=("127.0.0.1", 1883), help="the broker's host:port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s link-proxy %(levelname)s %(message)s")
    try:
        profile = get_profile(args.profile, key="--profile")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201 - command-line error
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LinkProxy(profile, *args.upstream, listen_host=args.listen[0], listen_port=args.listen[1]) as proxy:
        print(proxy.port, flush=True)  # noqa: T201 - the port is this command's output
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
