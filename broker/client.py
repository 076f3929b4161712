"""The fleet's MQTT 5 client: a thin, safe wrapper over paho-mqtt that every node uses.

What it takes care of, so callers don't:
- Last Will set before connect; MQTT 5 with a session that survives reconnects (clean start only once).
- Reconnect with exponential backoff (paho's loop thread) and re-subscription of every filter.
- TCP_NODELAY on the socket: without it QoS 0 latency sits at Nagle's 5 ms.
- Reads, acknowledgements and writes in batches (`broker/batching_paho.py`): a token stream is
  thousands of small QoS 1 messages per second on a host that also runs a model.
- Handlers run on a dispatcher thread (`broker/dispatcher.py`), never on paho's network thread, so a
  slow handler cannot stall keep-alives or acknowledgements; replies to our own requests are resolved
  on the network thread (a handler may itself wait on a request without deadlocking).
- Payloads are decoded into typed messages before a handler sees them; garbage is logged, counted
  and dropped, and a handler's exception is logged and counted: one bad message never kills a node.
- Request/response with MQTT 5 response topic + correlation data and a timeout.
paho types never leave these three modules.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker import topics
from broker.batching_paho import BatchingPahoClient, GracefulClosePahoClient, Received
from broker.config import BusConfig
from broker.dispatcher import BusStats, Dispatcher, Envelope, Handler, Subscription
from broker.errors import BusError, BusNotConnectedError, BusTimeoutError, MessageError
from broker.messages.codec import Message, decode
from emulation.link_proxy import LinkProxy, start_link_proxy

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Will:
    """Last Will: published by the broker if this client vanishes without a clean disconnect."""

    topic: str
    message: Message
    qos: int = 1
    retain: bool = False


class BusClient:
    """One MQTT 5 connection of a node. Use as a context manager or call connect()/close()."""

    def __init__(
        self,
        client_id: str,
        config: BusConfig,
        will: Will | None = None,
        will_factory: Callable[[], Will] | None = None,
    ) -> None:
        """`will_factory`, if given, is asked for a fresh Will before every (re)connection (new bdSeq)."""
        self.client_id = client_id
        self.config = config
        self.stats = BusStats()
        self._will_factory = will_factory
        self._will = will_factory() if will_factory is not None else will
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._socket_closed = threading.Event()  # set once paho closed the socket after our DISCONNECT
        self._closing = False
        self._refused = ""  # reason of the last refused CONNACK
        self._last_qos1: paho.MQTTMessageInfo | None = None
        self._pending: dict[bytes, Future[Envelope]] = {}
        self._reply_topic = topics.REPLY.topic(client=client_id)
        self._shared_filters: dict[str, str] = {}  # plain filter -> $share/... filter actually subscribed
        self._subacks: dict[int, Future[list[ReasonCode]]] = {}  # subscribe(wait_s=) waiting, by packet id
        self._dispatcher = Dispatcher(client_id, self.stats)
        self._link: LinkProxy | None = None  # the emulated link's proxy when bus.link_profile is not lan
        self._mqtt = self._make_paho_client()

    # ---- lifecycle -------------------------------------------------------------------------------

    def connect(self, timeout_s: float | None = None) -> BusClient:
        """Connect and start the network and dispatcher threads. Raises BusTimeoutError."""
        timeout_s = self.config.connect_timeout_s if timeout_s is None else timeout_s
        if 0 < self.config.gil_switch_interval_s < sys.getswitchinterval():
            sys.setswitchinterval(self.config.gil_switch_interval_s)  # process-wide: see BusConfig
        self._dispatcher.start()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.session_expiry_s
        properties.ReceiveMaximum = self.config.receive_maximum
        host, port = self.config.host, self.config.port
        try:
            if self.config.link_profile != "lan":  # emulated link: paho talks to a local proxy in front of the broker
                self._link = start_link_proxy(self.config.link_profile, host, port)
                host, port = self._link.host, self._link.port
            self._mqtt.connect_async(
                host,
                port,
                keepalive=self.config.keepalive_s,
                clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )
        except (OSError, ValueError) as error:
            raise BusError(f"{self.client_id}: cannot connect to {self.config.host}:{self.config.port}: {error}") from error
        self._mqtt.loop_start()
        refused = self._wait_first_connection(timeout_s)
        if refused:
            self.close()
            raise BusError(f"{self.client_id}: broker {self.config.host}:{self.config.port} refused the connection: {refused}")
        if not self._connected.is_set():
            self.close()
            raise BusTimeoutError(
                f"{self.client_id}: no connection to {self.config.host}:{self.config.port} within {timeout_s:.1f} s"
            )
        return self

    def _wait_first_connection(self, timeout_s: float) -> str:
        """Wait for CONNACK; returns the refusal reason if the broker said no (bad credentials)."""
        deadline = time.monotonic() + timeout_s
        while not self._connected.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if self._refused or time.monotonic() >= deadline:
                return self._refused
        return ""

    def close(self, send_will: bool = False, timeout_s: float = 5.0) -> None:
        """Disconnect cleanly (optionally asking the broker to publish our Will) and stop the threads."""
        if self._closing:
            return
        self._closing = True
        try:
            if self._connected.is_set():
                reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message" if send_will else "Normal disconnection")
                self._mqtt.disconnect(reasoncode=reason)
                # paho writes what is queued (a last QoS 0 heartbeat or metrics batch), then the DISCONNECT,
                # then closes the socket; stopping its thread before that would drop them.
                self._socket_closed.wait(timeout_s)
        finally:
            self._mqtt.loop_stop()
            self._dispatcher.stop(timeout_s)
            if self._link is not None:
                self._link.stop()
            for future in list(self._pending.values()):
                future.cancel()

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT, as a crash or power loss would (tests, benchmarks)."""
        self._closing = True
        self._mqtt.loop_stop()
        sock = self._mqtt.socket()
        if sock is not None:
            sock.close()
        self._dispatcher.stop(timeout_s=0.0)
        if self._link is not None:
            self._link.stop()

    def __enter__(self) -> BusClient:
        return self if self._dispatcher.started else self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the dispatcher thread after every (re)connection, e.g. to publish a birth."""
        self._dispatcher.on_connected(callback)

    # ---- publish / subscribe ---------------------------------------------------------------------

    def publish(
        self,
        spec: topics.TopicSpec,
        message: Message,
        *,
        wait_s: float | None = None,
        expiry_s: int | None = None,
        qos: int | None = None,
        **params: str,
    ) -> None:
        """Publish `message` on `spec.topic(**params)` with the spec's QoS/retain.

        With `wait_s`, block until the broker acknowledged it (QoS 1). Raises MessageError (bad or
        oversized message), TopicError, BusTimeoutError (no ack in time).
        """
        if spec.message is not None and not isinstance(message, spec.message):
            raise MessageError(f"{spec.pattern} carries {spec.message.__name__}, not {type(message).__name__}")
        properties = None
        if expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = expiry_s
        self.publish_bytes(
            spec.topic(**params), message.to_bytes(), qos=spec.qos if qos is None else qos,
            retain=spec.retain, properties=properties, wait_s=wait_s,
        )

    def publish_bytes(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        wait_s: float | None = None,
    ) -> None:
        """Publish a raw payload (benchmarks, clearing retained topics). Raises BusError subclasses."""
        info = self._mqtt.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        self.stats.add("published")
        if qos > 0:
            self._last_qos1 = info
        if info.rc in (paho.MQTT_ERR_NO_CONN, paho.MQTT_ERR_CONN_LOST):
            if qos == 0:  # best effort by definition: a heartbeat while offline is simply not sent
                self.stats.add("dropped_qos0")
                return
            # QoS 1: paho keeps the message and sends it after reconnecting.
        elif info.rc != paho.MQTT_ERR_SUCCESS:
            raise BusError(f"{self.client_id}: publish to {topic} failed: {paho.error_string(info.rc)}")
        if wait_s is not None and qos > 0:
            try:
                info.wait_for_publish(wait_s)
            except (ValueError, RuntimeError) as error:
                raise BusNotConnectedError(f"{self.client_id}: publish to {topic}: {error}") from error
            if not info.is_published():
                raise BusTimeoutError(f"{self.client_id}: no ack for {topic} within {wait_s:.1f} s")

    def flush(self, timeout_s: float) -> bool:
        """Wait until every QoS 1 message published so far was acknowledged (the broker acks in order)."""
        last = self._last_qos1
        if last is None:
            return True
        try:
            last.wait_for_publish(timeout_s)
        except (ValueError, RuntimeError):
            return False
        return last.is_published()

    def subscribe(
        self,
        spec: topics.TopicSpec,
        handler: Handler,
        *,
        shared_group: str | None = None,
        wait_s: float | None = None,
        **params: str,
    ) -> None:
        """Call `handler(envelope)` for every message on `spec.filter(**params)`.

        Subscriptions are remembered and renewed after every reconnect. With `shared_group`, the
        filter becomes an MQTT 5 shared subscription (one group member receives each message).
        With `wait_s` (and a connection), return only once the broker confirmed the subscription, so
        that nothing published afterwards is missed; raises BusTimeoutError, or BusError if refused.
        """
        filter_ = spec.filter(**params)
        full_filter = topics.shared(filter_, shared_group) if shared_group else filter_
        self._dispatcher.add(Subscription(filter_, spec.qos, handler))
        self._shared_filters[filter_] = full_filter
        if not self._connected.is_set():
            return
        suback: Future[list[ReasonCode]] = Future()
        with self._lock:  # registered before _on_subscribe can look for it
            _, mid = self._mqtt.subscribe(full_filter, qos=spec.qos)
            if wait_s is not None:
                self._subacks[mid] = suback
        if wait_s is None:
            return
        try:
            reasons = suback.result(wait_s)
        except FutureTimeout:
            raise BusTimeoutError(f"{self.client_id}: no SUBACK for {full_filter} within {wait_s:.1f} s") from None
        finally:
            with self._lock:
                self._subacks.pop(mid, None)
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            raise BusError(f"{self.client_id}: broker refused the subscription to {full_filter}: {', '.join(refused)}")

    def unsubscribe(self, spec: topics.TopicSpec, **params: str) -> None:
        filter_ = spec.filter(**params)
        self._dispatcher.remove(filter_)
        self._mqtt.unsubscribe(self._shared_filters.pop(filter_, filter_))

    # ---- request / response ----------------------------------------------------------------------

    def request(self, spec: topics.TopicSpec, message: Message, *, timeout_s: float, **params: str) -> Envelope:
        """Publish a request and wait for the correlated reply. Raises BusTimeoutError, MessageError."""
        correlation = uuid.uuid4().bytes
        future: Future[Envelope] = Future()
        self._pending[correlation] = future
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = self._reply_topic
        properties.CorrelationData = correlation
        properties.MessageExpiryInterval = max(1, int(timeout_s + 0.999))
        try:
            self.publish_bytes(spec.topic(**params), message.to_bytes(), qos=spec.qos, properties=properties)
            return future.result(timeout_s)
        except FutureTimeout:
            raise BusTimeoutError(f"{self.client_id}: no reply on {spec.pattern} within {timeout_s:.2f} s") from None
        finally:
            self._pending.pop(correlation, None)

    def reply(self, request: Envelope, message: Message) -> None:
        """Answer a request received by a handler. Raises BusError if the request carried no response topic."""
        if not request.response_topic:
            raise BusError(f"{self.client_id}: request on {request.topic} has no response topic")
        properties = Properties(PacketTypes.PUBLISH)
        if request.correlation_data is not None:
            properties.CorrelationData = request.correlation_data
        self.publish_bytes(request.response_topic, message.to_bytes(), qos=1, properties=properties)

    # ---- paho plumbing (network thread) ----------------------------------------------------------

    def _make_paho_client(self) -> paho.Client:
        client_type = BatchingPahoClient if self.config.batched_io else GracefulClosePahoClient
        client = client_type(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        if isinstance(client, BatchingPahoClient):
            client.set_batch_sink(self._on_batch)
        if self.config.tls_ca_file:
            try:
                client.tls_set(ca_certs=self.config.tls_ca_file, certfile=self.config.tls_cert_file or None,
                               keyfile=self.config.tls_key_file or None)
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                raise BusError(f"{self.client_id}: TLS settings unusable: {error}") from error
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password or None)
        self._mqtt = client
        if self._will is not None:
            self._set_will(self._will)
        client.reconnect_delay_set(self.config.reconnect_min_s, self.config.reconnect_max_s)
        client.max_inflight_messages_set(self.config.max_inflight)
        client.max_queued_messages_set(0)  # unbounded: QoS 1 messages wait for a reconnect, never dropped
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _set_will(self, will: Will) -> None:
        self._will = will
        self._mqtt.will_set(will.topic, will.message.to_bytes(), qos=will.qos, retain=will.retain)

    @staticmethod
    def _on_socket_open(client: paho.Client, userdata: object, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # e.g. a websocket or unix socket: nothing to tune
            pass

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, properties: object) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            logger.warning("%s: connection refused: %s", self.client_id, reason)
            return
        self._refused = ""
        filters = self._dispatcher.filters()
        filters[topics.REPLY.filter(client=self.client_id)] = 1
        for filter_, qos in filters.items():
            client.subscribe(self._shared_filters.get(filter_, filter_), qos=qos)
        if self._connected.is_set():
            return
        self.stats.add("connects")
        logger.info("%s: connected to %s:%s", self.client_id, self.config.host, self.config.port)
        self._connected.set()
        self._dispatcher.put_connected()  # on-connect callbacks run on the dispatcher, in order

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, properties: object) -> None:
        self._connected.clear()
        if self._closing:
            self._socket_closed.set()
        if self._will_factory is not None and not self._closing:
            self._set_will(self._will_factory())
        if not self._closing:
            self.stats.add("disconnects")
            logger.warning("%s: disconnected (%s); reconnecting", self.client_id, reason)

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: list[ReasonCode],
                      properties: object) -> None:
        with self._lock:
            suback = self._subacks.pop(mid, None)
        if suback is not None:
            suback.set_result(reasons)
        for reason in reasons:
            if reason.is_failure:
                logger.warning("%s: broker refused a subscription: %s", self.client_id, reason)

    def _on_batch(self, batch: list[Received]) -> None:
        """Messages of one socket read: replies resolve here, the rest go to the dispatcher in one hand-off."""
        self.stats.add("received", len(batch))
        for_dispatcher = []
        for received in batch:
            if received[0] == self._reply_topic:
                self._resolve_reply(received[1], received[2])
            else:
                for_dispatcher.append(received)
        if for_dispatcher:
            self._dispatcher.put(for_dispatcher)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        """What paho itself delivers: everything without batched I/O, else only a PUBLISH whose topic is not UTF-8."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self.stats.add("malformed")
            logger.warning("%s: dropped a message whose topic is not UTF-8", self.client_id)
            return
        self._on_batch([(topic, msg.payload, getattr(msg, "properties", None))])

    def _resolve_reply(self, payload: bytes, properties: Properties | None) -> None:
        correlation = getattr(properties, "CorrelationData", None)
        future = self._pending.get(correlation) if correlation else None
        if future is None:
            self.stats.add("late_replies")
            return
        try:
            envelope = Envelope(self._reply_topic, topics.REPLY, {"client": self.client_id}, decode(payload))
        except MessageError as error:
            future.set_exception(error)
            return
        if not future.done():
            future.set_result(envelope)
