"""The client wrapper against a real Mosquitto: delivery, request/response, ACLs, garbage, reconnects."""

import dataclasses
import sys
import threading

import pytest

from broker import topics
from broker.batching_paho import QUEUED_HIGH_WATER
from broker.client import BusClient
from broker.errors import BusError, BusTimeoutError
from broker.messages import Heartbeat, NodeCommand, NodeDeath, TaskResult
from broker.messages.inference import ContextChunk
from tests.conftest import wait_until

HIDDEN_BYTES = 1152  # one fp16 hidden state of SmolLM2


def connect(mosquitto, user):
    return BusClient(user, mosquitto.bus_config(user)).connect()


def test_published_message_reaches_subscriber_as_typed_object(mosquitto):
    received = []
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as edge:
        center.subscribe(topics.TASK_RESULT, lambda env: received.append(env))
        wait_until(lambda: False, 0.2)
        result = TaskResult(task_id="t1", node_id="pi-01", status="ok", answer="42")
        edge.publish(topics.TASK_RESULT, result, wait_s=5, node="pi-01")
        assert wait_until(lambda: received)
    assert received[0].message == result
    assert received[0].params == {"node": "pi-01"}


def test_request_gets_correlated_reply(mosquitto):
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as edge:
        def answer(envelope):
            command = envelope.message
            edge.reply(envelope, TaskResult(task_id=command.command_id, node_id="pi-01", status="ok"))

        edge.subscribe(topics.NODE_COMMAND, answer, node="pi-01")
        wait_until(lambda: False, 0.2)
        replies = [center.request(topics.NODE_COMMAND, NodeCommand(command_id=f"c{i}", kind="drain"), timeout_s=5,
                                  node="pi-01") for i in range(3)]
    assert [r.message.task_id for r in replies] == ["c0", "c1", "c2"]


def test_request_without_responder_times_out(mosquitto):
    with connect(mosquitto, "center") as center, pytest.raises(BusTimeoutError):
        center.request(topics.NODE_COMMAND, NodeCommand(command_id="c", kind="drain"), timeout_s=0.5, node="pi-02")


def test_wrong_password_fails_fast_with_reason(mosquitto):
    config = mosquitto.bus_config(None, username="pi-01", password="wrong")
    with pytest.raises(BusError, match="refused"):
        BusClient("pi-01", config).connect(timeout_s=5)


def test_edge_cannot_publish_as_another_edge(mosquitto):
    seen = []
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as impostor:
        center.subscribe(topics.NODE_DEATH, lambda env: seen.append(env.params["node"]))
        wait_until(lambda: False, 0.2)
        impostor.publish(topics.NODE_DEATH, NodeDeath(node_id="pi-02", bd_seq=99), node="pi-02")
        impostor.publish(topics.NODE_DEATH, NodeDeath(node_id="pi-01", bd_seq=99), node="pi-01")
        assert wait_until(lambda: "pi-01" in seen)
        wait_until(lambda: False, 0.3)
    assert seen == ["pi-01"]  # the broker dropped the forged pi-02 death


def test_edge_cannot_dispatch_or_command(mosquitto):
    got = []
    with connect(mosquitto, "pi-02") as victim, connect(mosquitto, "pi-01") as attacker:
        victim.subscribe(topics.NODE_COMMAND, lambda env: got.append(env), node="pi-02")
        wait_until(lambda: False, 0.2)
        attacker.publish(topics.NODE_COMMAND, NodeCommand(command_id="x", kind="stop"), node="pi-02")
        wait_until(lambda: False, 0.5)
    assert got == []


def test_handler_exception_and_garbage_do_not_stop_delivery(mosquitto):
    good = []

    def handler(envelope):
        if envelope.message.task_id == "boom":
            raise RuntimeError("handler bug")
        good.append(envelope.message.task_id)

    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as edge:
        center.subscribe(topics.TASK_RESULT, handler)
        wait_until(lambda: False, 0.2)
        topic = topics.TASK_RESULT.topic(node="pi-01")
        edge.publish_bytes(topic, b"\x00garbage")
        edge.publish_bytes(topic, NodeDeath(node_id="pi-01", bd_seq=1).to_bytes())  # wrong type for the topic
        edge.publish(topics.TASK_RESULT, TaskResult(task_id="boom", node_id="pi-01", status="ok"), node="pi-01")
        edge.publish(topics.TASK_RESULT, TaskResult(task_id="fine", node_id="pi-01", status="ok"), node="pi-01")
        assert wait_until(lambda: good == ["fine"])
        assert center.stats.counts["malformed"] == 2
        assert center.stats.counts["handler_errors"] == 1


def test_slow_handler_does_not_block_requests_from_inside_it(mosquitto):
    # A handler that itself waits on a request must not deadlock: replies resolve on the network thread.
    done = threading.Event()
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as edge:
        edge.subscribe(topics.NODE_COMMAND, lambda env: edge.reply(env, NodeDeath(node_id="pi-01", bd_seq=1)), node="pi-01")

        def handler(envelope):
            center.request(topics.NODE_COMMAND, NodeCommand(command_id="inner", kind="drain"), timeout_s=5, node="pi-01")
            done.set()

        center.subscribe(topics.TASK_RESULT, handler)
        wait_until(lambda: False, 0.2)
        edge.publish(topics.TASK_RESULT, TaskResult(task_id="t", node_id="pi-01", status="ok"), node="pi-01")
        assert done.wait(10)


def test_client_reconnects_and_resubscribes_after_broker_restart(mosquitto):
    received = []
    with connect(mosquitto, "center") as center:
        center.subscribe(topics.TASK_RESULT, lambda env: received.append(env.message.task_id))
        mosquitto.broker.kill()
        assert wait_until(lambda: not center.connected, 5)
        mosquitto.broker.start()
        assert wait_until(lambda: center.connected, 10)
        with connect(mosquitto, "pi-01") as edge:
            wait_until(lambda: False, 0.3)
            edge.publish(topics.TASK_RESULT, TaskResult(task_id="after", node_id="pi-01", status="ok"), wait_s=5, node="pi-01")
            assert wait_until(lambda: received == ["after"])
    assert center.stats.counts["disconnects"] >= 1


@pytest.mark.parametrize("batched_io", [True, False])
def test_a_flood_of_qos1_messages_arrives_once_and_in_order_alongside_requests(mosquitto, batched_io):
    # Thousands of hidden-state chunks share the connection with request/response traffic: batched
    # reads, acks and writes (or plain paho) must lose, repeat or reorder nothing, and keep replies correlated.
    count, seqs, replies = 5000, [], []
    config = {user: dataclasses.replace(mosquitto.bus_config(user), batched_io=batched_io) for user in ("cloud-1", "pi-01")}
    with BusClient("cloud-1", config["cloud-1"]) as cloud, BusClient("pi-01", config["pi-01"]) as edge:
        cloud.subscribe(topics.INFER_UP, lambda env: seqs.append(env.message.seq), edge="pi-01", session="s1")
        edge.subscribe(topics.NODE_COMMAND, lambda env: edge.reply(env, NodeDeath(node_id="pi-01", bd_seq=1)), node="pi-01")
        wait_until(lambda: False, 0.3)
        data = bytes(HIDDEN_BYTES)
        for seq in range(count):
            edge.publish(topics.INFER_UP, ContextChunk(session_id="s1", seq=seq, first_position=seq, count=1,
                                                       hidden_size=HIDDEN_BYTES // 2, data=data), edge="pi-01", session="s1")
        with connect(mosquitto, "center") as center:
            for i in range(20):
                replies.append(center.request(topics.NODE_COMMAND, NodeCommand(command_id=f"c{i}", kind="drain"),
                                              timeout_s=5, node="pi-01").message.node_id)
        assert edge.flush(30)
        assert wait_until(lambda: len(seqs) >= count, 30)
        wait_until(lambda: False, 0.3)
    assert seqs == list(range(count))
    assert replies == ["pi-01"] * 20


def test_subscribe_can_wait_for_the_broker(mosquitto):
    received = []
    with connect(mosquitto, "center") as center, connect(mosquitto, "pi-01") as edge:
        center.subscribe(topics.NODE_HEARTBEAT, lambda env: received.append(env), wait_s=5)
        # QoS 0 right after the SUBACK: no sleep needed for it to be delivered.
        edge.publish(topics.NODE_HEARTBEAT, Heartbeat(node_id="pi-01", bd_seq=1, seq=0, timestamp=0.0, cpu_percent=1.0, memory_percent=1.0,
                                                         memory_used_bytes=1, load_avg_1m=0.0), node="pi-01")
        assert wait_until(lambda: received, 2)


@pytest.mark.parametrize("batched_io", [True, False])
def test_a_message_published_just_before_close_is_delivered(mosquitto, batched_io):
    # paho closes the socket right after DISCONNECT; with the SUBACK of the connect-time subscription
    # still unread, the kernel resets the connection and the broker drops the last QoS 0 message.
    received = []
    with connect(mosquitto, "center") as center:
        center.subscribe(topics.NODE_HEARTBEAT, lambda env: received.append(env.message.seq), wait_s=5, node="pi-01")
        for seq in range(COUNT := 40):
            with BusClient("pi-01", dataclasses.replace(mosquitto.bus_config("pi-01"), batched_io=batched_io)) as edge:
                edge.subscribe(topics.NODE_COMMAND, lambda env: None, node="pi-01")  # its SUBACK arrives as we close
                edge.publish(topics.NODE_HEARTBEAT, Heartbeat(
                    node_id="pi-01", bd_seq=1, seq=seq, timestamp=0.0, cpu_percent=1.0, memory_percent=1.0,
                    memory_used_bytes=1, load_avg_1m=0.0, counters={f"c{i}": 1.0 for i in range(8000)}), node="pi-01")
        assert wait_until(lambda: len(received) == COUNT, 5), received
    assert received == list(range(COUNT))


def test_connecting_shortens_the_gil_switch_interval(mosquitto):
    # paho's network thread must get the GIL back quickly from Python-heavy model code.
    default = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        with connect(mosquitto, "pi-01"):
            assert sys.getswitchinterval() == pytest.approx(0.0005)
        sys.setswitchinterval(0.005)
        config = dataclasses.replace(mosquitto.bus_config("pi-01"), gil_switch_interval_s=0.0)
        with BusClient("pi-01", config):
            assert sys.getswitchinterval() == pytest.approx(0.005)  # 0 leaves the interpreter alone
    finally:
        sys.setswitchinterval(default)


def test_a_publisher_far_ahead_of_the_send_window_waits_for_room(mosquitto):
    # Backpressure: queueing thousands of messages while the network thread fights for the GIL cost
    # twice the CPU; the publisher sleeps above the high-water mark until acks drain the queue.
    seqs, most_queued, COUNT = [], 0, 10_000
    with connect(mosquitto, "cloud-1") as cloud, connect(mosquitto, "pi-01") as edge:
        cloud.subscribe(topics.INFER_UP, lambda env: seqs.append(env.message.seq), wait_s=5, edge="pi-01", session="s2")
        topic = topics.INFER_UP.topic(edge="pi-01", session="s2")
        payloads = [ContextChunk(session_id="s2", seq=seq, first_position=seq, count=1, hidden_size=HIDDEN_BYTES // 2,
                                 data=bytes(HIDDEN_BYTES)).to_bytes() for seq in range(COUNT)]
        for payload in payloads:  # as fast as paho takes them
            edge.publish_bytes(topic, payload)
            most_queued = max(most_queued, len(edge._mqtt._queued))
        assert edge.flush(30)
        assert wait_until(lambda: len(seqs) >= COUNT, 30)
    assert most_queued <= QUEUED_HIGH_WATER + 1
    assert seqs == list(range(COUNT))
