"""paho-mqtt 2.2 tuned for a stream of thousands of small QoS 1 messages per second.

paho handles one packet per call in Python: a select() and three or four recv() calls to read it,
a Properties and a ReasonCode object per PUBLISH or PUBACK, a wake-up byte and a send() per PUBACK.
On a 2-core host running the broker and both ends, that per-packet cost, not the network, caps a
hidden-state stream. This subclass keeps paho's session logic (QoS 1 windows, retries, reconnects)
and changes only how bytes move:

- reads: one recv() of up to RECV_BYTES, then every complete packet in it is parsed in place;
- PUBLISH (QoS 0/1, MQTT 5): decoded directly; Properties are built only when the packet has any;
  received messages go to the owner in one batch per read, not one callback per message;
- PUBACK: the acks for a read go out as one write; a plain incoming PUBACK skips paho's decoder;
- writes: consecutive QoS 1 PUBLISH and PUBACK packets leave in one send();
- a clean disconnect waits for the broker to close first (`GracefulClosePahoClient`).

Everything else (CONNACK, SUBACK, QoS 2, DISCONNECT, websockets' framing underneath) is paho's own code.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

RECV_BYTES = 256 * 1024  # one recv() serves hundreds of hidden-state messages
MAX_BATCH = 256  # deliver and acknowledge at least this often while a large read is parsed
SEND_BYTES = 64 * 1024  # bytes joined into one send()
CLOSE_WAIT_S = 1.0  # how long a clean disconnect waits for the broker to close its side
QUEUED_HIGH_WATER = 1000  # messages waiting for the send window before a publisher sleeps
QUEUED_LOW_WATER = 250  # ... until no more than this many wait
ROOM_WAIT_S = 1.0  # longest sleep per publish: backpressure, never a stall

PUBLISH, PUBACK = 0x30, 0x40
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK, "Success")
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)
_ACK = struct.Struct("!BBH")
_PACKET_ID = struct.Struct("!H")  # also a topic length

Received = tuple[str, bytes, Properties | None]  # topic, payload, properties (None when it had none)
BatchSink = Callable[[list[Received]], None]


class MalformedPacketError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """MQTT variable byte integer at `pos`: (value, position after it). Raises IndexError if cut short."""
    value, shift = 0, 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MalformedPacketError("variable byte integer longer than 4 bytes")


def decode_publish(command: int, packet: bytes) -> tuple[str, int, Properties | None, bytes]:
    """MQTT 5 PUBLISH body -> (topic, packet id or 0, properties or None, payload).

    Raises MalformedPacketError (or UnicodeDecodeError for a topic that is not UTF-8).
    """
    try:
        topic_end = 2 + ((packet[0] << 8) | packet[1])
        if topic_end > len(packet):
            raise MalformedPacketError("topic longer than the packet")
        topic = packet[2:topic_end].decode()
        pos, mid = topic_end, 0
        if command & 0x06:
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        properties_length, payload_at = _varint(packet, pos)
        properties = None
        if properties_length:
            payload_at += properties_length
            if payload_at > len(packet):
                raise MalformedPacketError("properties longer than the packet")
            properties = Properties(PacketTypes.PUBLISH)
            properties.unpack(packet[pos:payload_at])
    except IndexError:
        raise MalformedPacketError("PUBLISH cut short") from None
    return topic, mid, properties, packet[payload_at:]


def encode_publish(topic: bytes, payload: bytes | bytearray, mid: int, qos: int, retain: bool, dup: bool) -> bytes:
    """A whole MQTT 5 PUBLISH without properties (the inverse of decode_publish)."""
    head = _PACKET_ID.pack(len(topic)) + topic + (_PACKET_ID.pack(mid) if qos else b"") + b"\x00"
    command = PUBLISH | (dup & 1) << 3 | qos << 1 | retain
    return bytes([command]) + _encode_varint(len(head) + len(payload)) + head + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


class GracefulClosePahoClient(paho.Client):
    """paho closes its socket right after writing DISCONNECT. If the broker's last packet (say the SUBACK
    of a subscription made at connect) is still unread then, the kernel answers with a reset, and the
    broker drops what it had not yet read: the DISCONNECT and any message published just before it.
    Here our side shuts down writing and waits, briefly, for the broker to close first."""

    def _sock_close(self) -> None:
        sock = self._sock
        if sock is not None and self._state == paho._ConnectionState.MQTT_CS_DISCONNECTING:
            _drain_until_peer_closes(sock, CLOSE_WAIT_S)
        super()._sock_close()


def _drain_until_peer_closes(sock: object, timeout_s: float) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]
        sock.settimeout(timeout_s)  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and sock.recv(65536):  # type: ignore[attr-defined]
            pass
    except (OSError, AttributeError, ValueError):  # already reset, timed out, or not a plain socket
        pass


class BatchingPahoClient(GracefulClosePahoClient):
    """A paho Client whose received messages go to `sink(batch)` on the network thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._partial = bytearray()  # the start of a packet whose remaining bytes have not arrived yet
        self._partial_needs = 0  # bytes of it needed before parsing again (a lower bound while its header is cut)
        self._sink: BatchSink | None = None
        self._received: list[Received] = []  # this read's messages, for the sink
        self._acks: list[int] = []  # this read's QoS 1 packet ids, acknowledged in one write
        self._write_lock = threading.RLock()  # one writer at a time: the network thread or a publishing thread
        self._queued: collections.deque[paho.MQTTMessage] = collections.deque()  # waiting for the send window
        self._room = threading.Condition(self._out_message_mutex)  # notified when _queued falls to the low water

    def set_batch_sink(self, sink: BatchSink) -> None:
        """Receive messages in batches instead of through on_message (MQTT 5, QoS 0/1, automatic acks)."""
        if self._protocol != paho.MQTTv5:
            raise ValueError("batched delivery decodes MQTT 5 PUBLISH packets only")
        self._sink = sink

    # ---- reading ---------------------------------------------------------------------------------

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        while True:  # until the socket is drained: bytes left in a kernel buffer would not wake select()
            if self._sock is None:
                return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
            try:
                data = self._sock_recv(RECV_BYTES)
            except BlockingIOError:
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
            except OSError as error:
                self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", error)
                return self._loop_rc_handle(paho.MQTTErrorCode.MQTT_ERR_CONN_LOST)
            if not data:
                return self._loop_rc_handle(paho.MQTTErrorCode.MQTT_ERR_CONN_LOST)
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()
            short_read = len(data) < RECV_BYTES
            if self._partial:  # a packet spans reads: collect its bytes, parse once it is whole
                self._partial += data
                if len(self._partial) < self._partial_needs:
                    if short_read:
                        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
                    continue
                data, self._partial = bytes(self._partial), bytearray()
            rc = self._handle_bytes(data)
            self._flush_batch()
            if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS:
                return self._loop_rc_handle(rc)
            if short_read:  # nothing more queued (an SSL socket's pending() is checked by paho)
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_bytes(self, data: bytes) -> paho.MQTTErrorCode:
        """Handle every complete packet in `data`; keep the incomplete tail for the next read."""
        pos, size, handled = 0, len(data), 0
        while pos < size:
            try:
                length, body_at = _varint(data, pos + 1)
            except IndexError:
                self._keep_partial(data[pos:], size - pos + 1)  # the fixed header itself is cut
                break
            except MalformedPacketError:
                return paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
            end = body_at + length
            if end > size:
                self._keep_partial(data[pos:], end - pos)
                break
            rc = self._handle_packet(data[pos], data[body_at:end])
            pos = end
            if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
            handled += 1
            if handled % MAX_BATCH == 0:
                self._flush_batch()
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _keep_partial(self, head: bytes, needs: int) -> None:
        """Hold the start of a packet until `needs` bytes of it (at least) have arrived."""
        self._partial = bytearray(head)
        self._partial_needs = needs

    def _handle_packet(self, command: int, body: bytes) -> paho.MQTTErrorCode:
        kind = command & 0xF0
        if kind == PUBLISH and self._sink is not None and not (command & 0x04) and not self._manual_ack:
            try:
                topic, mid, properties, payload = decode_publish(command, body)
            except MalformedPacketError as error:
                self._easy_log(paho.MQTT_LOG_ERR, "malformed PUBLISH: %s", error)
                return paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
            except UnicodeDecodeError:
                return self._paho_handles(command, body)  # paho logs and skips a topic that is not UTF-8
            self._received.append((topic, payload, properties))
            if mid:
                self._acks.append(mid)
            return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        if kind == PUBACK and len(body) == 2:  # success, no properties: the common case
            mid = (body[0] << 8) | body[1]
            with self._out_message_mutex:
                if mid in self._out_messages:
                    return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PROPERTIES)
            return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._paho_handles(command, body)

    def _paho_handles(self, command: int, body: bytes) -> paho.MQTTErrorCode:
        self._in_packet.update(command=command, have_remaining=1, remaining_length=len(body),
                               packet=bytearray(body), to_process=0, pos=0)
        try:
            return self._packet_handle()
        except paho.MalformedPacket as error:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", error)
            return paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            self._in_packet.update(command=0, have_remaining=0, remaining_count=[], remaining_mult=1,
                                   remaining_length=0, packet=bytearray(b""), to_process=0, pos=0)

    def _flush_batch(self) -> None:
        """Acknowledge, then deliver, what the last read brought (acks first keep the broker sending).

        Also writes what handling the read queued: the next messages of the send window after PUBACKs.
        """
        if self._acks:
            acks, self._acks = self._acks, []
            self._packet_queue(PUBACK, b"".join([_ACK.pack(PUBACK, 2, mid) for mid in acks]), 0, 0)
        if self._out_packet:
            self.loop_write()  # we are the network thread: no wake-up byte needed
        if self._received:
            batch, self._received = self._received, []
            self._sink(batch)

    def _sock_close(self) -> None:
        with self._write_lock:  # never while another thread is writing to this socket
            self._partial = bytearray()  # a new connection must not see the old one's bytes
            self._acks = []  # the broker resends unacknowledged QoS 1 messages to the resumed session
            super()._sock_close()

    # ---- the send window -------------------------------------------------------------------------

    def publish(self, topic: str, payload: paho.PayloadType = None, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> paho.MQTTMessageInfo:
        with self._out_message_mutex:  # an RLock: paho takes it again inside
            info = super().publish(topic, payload, qos, retain, properties)
            message = self._out_messages.get(info.mid) if qos > 0 else None
            if message is not None and message.state == paho.mqtt_ms_queued:
                self._queued.append(message)
                self._wait_for_room()
        return info

    def _wait_for_room(self) -> None:
        """Backpressure: a publisher far ahead of the send window sleeps until acks make room.

        Without it a flood queues thousands of messages while the publishing thread and the network
        thread trade the GIL at every message; sleeping hands the network thread the interpreter.
        Never on the network thread (it makes the room), never while disconnected (paho keeps the
        messages for the reconnect), and never for long: a stalled broker only slows the publisher.
        """
        if len(self._queued) <= QUEUED_HIGH_WATER or threading.current_thread() is self._thread:
            return  # the common case, checked first: it runs for every queued publish
        deadline = time.monotonic() + ROOM_WAIT_S
        while (len(self._queued) > QUEUED_HIGH_WATER and self._state == paho._ConnectionState.MQTT_CS_CONNECTED
               and time.monotonic() < deadline):
            self._room.wait(ROOM_WAIT_S)

    def _update_inflight(self) -> paho.MQTTErrorCode:
        """Send queued messages while the window has room (caller holds `_out_message_mutex`).

        paho walks every outgoing message on each ack to find the next queued one, O(window) per ack;
        queued messages are kept here in publish order instead.
        """
        while self._queued and self._inflight_messages < self._max_inflight_messages:
            message = self._queued.popleft()
            if message.state != paho.mqtt_ms_queued or self._out_messages.get(message.mid) is not message:
                continue  # acknowledged or re-sent by a reconnect meanwhile
            self._inflight_messages += 1
            message.state = paho.mqtt_ms_wait_for_puback if message.qos == 1 else paho.mqtt_ms_wait_for_pubrec
            rc = self._send_publish(message.mid, message.topic.encode("utf-8"), message.payload, message.qos,
                                    message.retain, message.dup, properties=message.properties)
            if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        if len(self._queued) <= QUEUED_LOW_WATER:
            with self._room:  # re-entrant: paho's callers already hold it
                self._room.notify_all()
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _send_publish(self, mid: int, topic: bytes, payload: bytes | bytearray = b"", qos: int = 0,
                      retain: bool = False, dup: bool = False, info: paho.MQTTMessageInfo | None = None,
                      properties: Properties | None = None) -> paho.MQTTErrorCode:
        """The packet in one expression when there is nothing to log and no properties (paho builds it in ~10 steps)."""
        if (properties is not None or self.on_log is not None or self._logger is not None or self._sock is None
                or not isinstance(topic, bytes) or not isinstance(payload, bytes | bytearray)):
            return super()._send_publish(mid, topic, payload, qos, retain, dup, info, properties)
        packet = encode_publish(topic, payload, mid, qos, retain, dup)
        return self._packet_queue(PUBLISH, packet, mid, qos, info)

    def _messages_reconnect_reset_out(self) -> None:
        super()._messages_reconnect_reset_out()
        with self._out_message_mutex:  # whatever a reconnect left queued, in paho's order
            self._queued = collections.deque(m for m in self._out_messages.values() if m.state == paho.mqtt_ms_queued)

    # ---- writing ---------------------------------------------------------------------------------

    def _packet_queue(self, command: int, packet: bytes, mid: int, qos: int,
                      info: paho.MQTTMessageInfo | None = None) -> paho.MQTTErrorCode:
        """Queue a packet; a QoS 1 PUBLISH or a PUBACK is written at once by the thread that made it.

        paho wakes its network thread with a byte for every packet, and that thread must take the GIL
        back from whatever runs the model: at thousands of packets per second, that hand-off, not the
        socket, was most of the publisher's cost. The network thread's own packets (acks, the next
        message of the send window) go out at the end of the read that produced them.
        """
        if not _needs_nothing_after_write(command, qos):
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(packet),
                                 "packet": packet, "info": info})
        if threading.current_thread() is self._thread:
            return paho.MQTTErrorCode.MQTT_ERR_SUCCESS  # written by _flush_batch at the end of this read
        if self._write_lock.acquire(blocking=False):  # else the network thread is writing: it takes ours too
            try:
                if self._state == paho._ConnectionState.MQTT_CS_CONNECTED:
                    self._write_plain_runs()
            finally:
                self._write_lock.release()
            if not self._out_packet:
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        self._wake_network_thread()  # leftovers (a full socket, a packet paho must write): select() takes over
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _wake_network_thread(self) -> None:
        if self._sockpairW is not None:
            try:
                self._sockpairW.send(b"0")
            except BlockingIOError:
                pass

    def _packet_write(self) -> paho.MQTTErrorCode:
        """Runs of QoS 1 PUBLISH / PUBACK packets go out with one send(); paho writes anything else."""
        with self._write_lock:
            rc = self._write_plain_runs()
            if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS or not self._out_packet:
                return rc
            head = self._out_packet[0]
            if _needs_nothing_after_write(head["command"], head["qos"]):
                return rc  # a partly written run: the socket is full
            return super()._packet_write()

    def _write_plain_runs(self) -> paho.MQTTErrorCode:
        """Send the queue's leading plain packets (caller holds the write lock); stop at any other kind."""
        while self._out_packet:
            run = self._plain_run()
            if not run:
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
            try:
                sent = self._sock_send(b"".join([packet["packet"][packet["pos"]:] for packet in run]))
            except (AttributeError, ValueError):  # as paho: the socket went away under us
                self._requeue(run)
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
            except BlockingIOError:
                self._requeue(run)
                return paho.MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError as error:
                self._requeue(run)
                self._easy_log(paho.MQTT_LOG_ERR, "failed to send on socket: %s", error)
                return paho.MQTTErrorCode.MQTT_ERR_CONN_LOST
            unsent = []
            for packet in run:
                taken = min(sent, packet["to_process"])
                sent -= taken
                packet["pos"] += taken
                packet["to_process"] -= taken
                if packet["to_process"]:
                    unsent.append(packet)
            with self._msgtime_mutex:
                self._last_msg_out = paho.time_func()
            if unsent:
                self._requeue(unsent)
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS  # the socket is full; select() says when to go on
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _plain_run(self) -> list[dict]:
        """Pop the leading packets that need nothing once written."""
        run, size = [], 0
        while self._out_packet and size < SEND_BYTES:
            packet = self._out_packet[0]
            if not _needs_nothing_after_write(packet["command"], packet["qos"]):
                break
            run.append(self._out_packet.popleft())
            size += packet["to_process"]
        return run

    def _requeue(self, packets: list[dict]) -> None:
        for packet in reversed(packets):
            self._out_packet.appendleft(packet)


def _needs_nothing_after_write(command: int, qos: int) -> bool:
    """A QoS 1 PUBLISH (done when acked) or a PUBACK: paho has no bookkeeping for the moment it is written."""
    kind = command & 0xF0
    return kind == PUBACK or (kind == PUBLISH and qos == 1)
