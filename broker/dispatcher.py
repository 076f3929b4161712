"""Handler side of a bus connection: subscriptions, topic routing, decoding, and the thread handlers run on.

The network thread hands over whole batches of received messages; handlers run here, never on the
network thread, so a slow handler cannot stall keep-alives or acknowledgements. Garbage is logged,
counted and dropped, and a handler's exception is logged and counted: one bad message never kills a node.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties

from broker import topics
from broker.batching_paho import Received
from broker.errors import MessageError, TopicError
from broker.messages.codec import Message, decode

logger = logging.getLogger(__name__)

ROUTE_CACHE_SIZE = 10_000  # distinct topics remembered; many short sessions start the cache over


@dataclass(frozen=True, slots=True)
class Envelope:
    """A received message as handlers see it."""

    topic: str
    spec: topics.TopicSpec | None
    params: dict[str, str]
    message: Message
    response_topic: str | None = None
    correlation_data: bytes | None = None


Handler = Callable[[Envelope], None]


@dataclass(frozen=True, slots=True)
class Subscription:
    filter: str
    qos: int
    handler: Handler


@dataclass(slots=True)
class BusStats:
    """Counters a node reports in its heartbeat."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount


Route = tuple[list[Subscription], topics.TopicSpec, dict[str, str]]

_CONNECTED: list[Received] = []  # inbox marker, compared by identity: run the on-connect callbacks
_STOP: list[Received] = []


class Dispatcher:
    """Runs handlers for received batches on one thread, in arrival order."""

    def __init__(self, client_id: str, stats: BusStats) -> None:
        self.client_id = client_id
        self.stats = stats
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, Route] = {}
        self._connect_callbacks: list[Callable[[], None]] = []
        self._inbox: queue.SimpleQueue[list[Received]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"bus-dispatch-{client_id}", daemon=True)

    # ---- subscriptions (any thread) --------------------------------------------------------------

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.append(subscription)
            self._routes.clear()

    def remove(self, filter_: str) -> None:
        with self._lock:
            self._subscriptions = [s for s in self._subscriptions if s.filter != filter_]
            self._routes.clear()

    def filters(self) -> dict[str, int]:
        """Every subscribed filter and its QoS (to renew them after a reconnect)."""
        with self._lock:
            return {s.filter: s.qos for s in self._subscriptions}

    def on_connected(self, callback: Callable[[], None]) -> None:
        self._connect_callbacks.append(callback)

    # ---- lifecycle and hand-over -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Finish what is queued, then stop (without waiting when called from a handler)."""
        self._inbox.put(_STOP)
        if timeout_s > 0 and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def put(self, batch: list[Received]) -> None:
        self._inbox.put(batch)

    def put_connected(self) -> None:
        self._inbox.put(_CONNECTED)

    # ---- dispatcher thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._inbox.get()
            if batch is _STOP:
                return
            if batch is _CONNECTED:
                self._run_connect_callbacks()
                continue
            for topic, payload, properties in batch:
                self._dispatch(topic, payload, properties)

    def _run_connect_callbacks(self) -> None:
        for callback in self._connect_callbacks:
            try:
                callback()
            except Exception:
                self.stats.add("handler_errors")
                logger.exception("%s: on-connect callback failed", self.client_id)

    def _route(self, topic: str) -> Route:
        """Subscriptions matching `topic` and its parsed spec, cached: matching and parsing cost more
        than decoding a 1 KB message, and a token stream repeats the same topic thousands of times."""
        route = self._routes.get(topic)
        if route is None:
            with self._lock:
                matching = [s for s in self._subscriptions if paho.topic_matches_sub(s.filter, topic)]
            spec, params = topics.parse(topic) if matching else (topics.REPLY, {})
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            route = self._routes[topic] = (matching, spec, params)
        return route

    def _dispatch(self, topic: str, payload: bytes, properties: Properties | None) -> None:
        try:
            matching, spec, params = self._route(topic)
        except TopicError as error:
            self.stats.add("malformed")
            logger.warning("%s: dropped message on %s: %s", self.client_id, topic, error)
            return
        if not matching:
            return
        try:
            message = decode(payload)
            if spec.message is not None and not isinstance(message, spec.message):
                raise MessageError(f"{topic} carries {spec.message.__name__}, got {type(message).__name__}")
        except MessageError as error:
            self.stats.add("malformed")
            logger.warning("%s: dropped malformed message on %s: %s", self.client_id, topic, error)
            return
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        envelope = Envelope(topic, spec, params, message, response_topic, correlation)
        for subscription in matching:
            try:
                subscription.handler(envelope)
            except Exception:
                self.stats.add("handler_errors")
                logger.exception("%s: handler for %s failed", self.client_id, topic)
