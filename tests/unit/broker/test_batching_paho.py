"""The batching paho client's packet handling: PUBLISH decoding, reads split anywhere, batched acks, joined writes.

Bytes go through a real socket pair; only the broker is absent (the integration tests have it).
"""

import socket
import struct
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.batching_paho import BatchingPahoClient, MalformedPacketError, decode_publish, encode_publish


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def publish_packet(topic: str, payload: bytes, mid: int = 0, properties: bytes = b"") -> bytes:
    """A whole MQTT 5 PUBLISH (QoS 1 when `mid`, else QoS 0)."""
    body = struct.pack("!H", len(topic.encode())) + topic.encode()
    if mid:
        body += struct.pack("!H", mid)
    body += varint(len(properties)) + properties + payload
    return bytes([0x32 if mid else 0x30]) + varint(len(body)) + body


def correlation_property(data: bytes) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)
    properties.CorrelationData = data
    return properties.pack()[len(varint(len(properties.pack()) - 1)):]  # pack() includes its own length prefix


class Wired:
    """A client whose socket is one end of a socket pair; `peer` plays the broker."""

    def __init__(self, send_buffer: int | None = None) -> None:
        self.client = BatchingPahoClient(paho.CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5)
        self.batches: list[list] = []
        self.client.set_batch_sink(self.batches.append)
        self.sock, self.peer = socket.socketpair()
        if send_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.sock.setblocking(False)
        self.peer.settimeout(2)
        self.client._sock = self.sock

    def received(self) -> list:
        return [item for batch in self.batches for item in batch]

    def peer_reads(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            data += self.peer.recv(size - len(data))
        return data

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


@pytest.fixture
def wired():
    wire = Wired()
    yield wire
    wire.close()


def test_decode_publish_reads_topic_id_properties_and_payload():
    packet = publish_packet("fleet/v1/x", b"payload", mid=7, properties=correlation_property(b"abc"))
    topic, mid, properties, payload = decode_publish(packet[0], packet[2:])
    assert (topic, mid, payload) == ("fleet/v1/x", 7, b"payload")
    assert properties.CorrelationData == b"abc"


def test_decode_publish_without_properties_builds_none():
    packet = publish_packet("a/b", b"\x00\x01", mid=0)
    assert decode_publish(packet[0], packet[2:]) == ("a/b", 0, None, b"\x00\x01")


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x09abc", b"\x00\x01a\x00", b"\x00\x01a\x00\x01\x05\x01"])
def test_decode_publish_rejects_cut_packets(body):
    with pytest.raises(MalformedPacketError):
        decode_publish(0x32, body)


def test_many_publishes_in_one_read_arrive_in_order_as_one_batch_and_are_acked_in_one_write(wired):
    wired.peer.sendall(b"".join(publish_packet("s/up", bytes([i]) * 100, mid=i + 1) for i in range(50)))
    assert wired.client.loop_read() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert len(wired.batches) == 1
    assert [payload[0] for _, payload, _ in wired.received()] == list(range(50))
    acks = wired.peer_reads(4 * 50)
    assert [struct.unpack("!BBH", acks[i:i + 4]) for i in range(0, len(acks), 4)] == [(0x40, 2, i + 1) for i in range(50)]


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 150])
def test_a_packet_split_across_reads_is_reassembled(wired, cut):
    stream = publish_packet("s/up", b"x" * 200, mid=1) + publish_packet("s/up", b"y" * 3, mid=2)
    wired.peer.sendall(stream[:cut])
    wired.client.loop_read()
    wired.peer.sendall(stream[cut:])
    wired.client.loop_read()
    assert [payload for _, payload, _ in wired.received()] == [b"x" * 200, b"y" * 3]


def test_a_message_larger_than_one_recv_arrives_whole(wired):
    big = bytes(range(256)) * 4096  # 1 MiB, four times RECV_BYTES
    wired.peer.setblocking(True)
    sender = threading.Thread(target=wired.peer.sendall, args=(publish_packet("s/big", big, mid=3),))
    sender.start()
    while not wired.batches:
        wired.client.loop_read()
    sender.join()
    assert wired.received()[0][1] == big


def test_properties_survive_and_qos0_is_not_acked(wired):
    wired.peer.sendall(publish_packet("r/me", b"reply", properties=correlation_property(b"id-1")))
    wired.client.loop_read()
    (topic, payload, properties), = wired.received()
    assert (topic, payload, properties.CorrelationData) == ("r/me", b"reply", b"id-1")
    wired.peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        wired.peer.recv(10)


def test_garbage_from_the_peer_is_a_protocol_error_not_a_crash(wired):
    wired.peer.sendall(b"\x32\x04\x00\x09ab")  # topic length 9 in a 4-byte body
    assert wired.client.loop_read() == paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert wired.batches == []


def test_an_over_long_remaining_length_is_a_protocol_error(wired):
    wired.peer.sendall(b"\x30\xff\xff\xff\xff\x01")
    assert wired.client.loop_read() == paho.MQTTErrorCode.MQTT_ERR_PROTOCOL


def test_queued_publishes_leave_in_order_even_when_the_socket_fills():
    wire = Wired(send_buffer=4096)
    try:
        packets = [publish_packet("s/up", bytes([i % 256]) * 1000, mid=i + 1) for i in range(300)]
        for packet in packets:
            wire.client._out_packet.append({"command": 0x32, "mid": 0, "qos": 1, "pos": 0, "to_process": len(packet),
                                            "packet": packet, "info": None})
        expected, got = b"".join(packets), b""
        while len(got) < len(expected):
            wire.client._packet_write()  # returns early whenever the socket buffer is full
            wire.peer.setblocking(False)
            try:
                got += wire.peer.recv(1 << 20)
            except BlockingIOError:
                pass
        assert got == expected
        assert not wire.client._out_packet
    finally:
        wire.close()


def test_batching_needs_mqtt5():
    client = BatchingPahoClient(paho.CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv311)
    with pytest.raises(ValueError, match="MQTT 5"):
        client.set_batch_sink(lambda batch: None)


@pytest.mark.parametrize(("topic", "payload", "mid", "qos", "retain", "dup"), [
    (b"a/b", b"x" * 10, 5, 1, False, False),
    (b"fleet/v1/infer/pi-01/s/up", b"y" * 1282, 65535, 1, False, True),
    (b"t", b"", 0, 0, True, False),
    (b"t" * 300, b"z" * 200_000, 7, 1, True, True),
])
def test_encode_publish_is_byte_for_byte_what_paho_builds(topic, payload, mid, qos, retain, dup):
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    built = []
    client._packet_queue = lambda command, packet, *args, **kwargs: built.append(bytes(packet))
    client._sock, peer = socket.socketpair()
    try:
        paho.Client._send_publish(client, mid, topic, payload, qos, retain, dup)
    finally:
        client._sock.close()
        peer.close()
        client._sock = None
    assert encode_publish(topic, payload, mid, qos, retain, dup) == built[0]
