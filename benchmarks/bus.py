"""Bus benchmark: 1,152-byte hidden-state messages between two processes through a real local Mosquitto.

`.venv/bin/python -m benchmarks.bus --json` prints one JSON object as its last line:
qos1_msgs_per_s (20,000 messages as fast as they go), qos1_p50_ms / qos1_p99_ms (paced at 5,000 msg/s),
qos1_p50_ms_busy (paced, while the publisher runs torch matmuls in another thread), qos1_p50_ms_busy_python
(the same next to pure-Python work, which holds the GIL), qos0_p50_ms (paced),
rtt_p50_ms (request/response), lost (published but never received, all runs), and
flood_cpu_us_per_msg: CPU time per message of publisher, broker and subscriber in the flood; and the
same flood through plain paho 2.2 (`bus.batched_io = false`) for a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np
import psutil

from benchmarks.report import print_result
from broker import topics
from broker.client import BusClient, Envelope
from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port
from broker.messages.inference import ContextChunk, SessionOpen, SessionOpened
from runtime.threads import COMPUTE_NICE, lower_thread_priority

HIDDEN_SIZE = 576  # SmolLM2-135M: one fp16 hidden state is 1,152 bytes
SESSION = "bench"
EDGE, CLOUD = "pi-01", "cloud-1"


@dataclass(frozen=True)
class Phase:
    name: str
    count: int
    rate_per_s: float  # 0 = as fast as possible
    qos: int
    busy: str = ""  # "", "torch" (matmuls releasing the GIL) or "python" (pure-Python work holding it)
    batched_io: bool = True  # False: plain paho 2.2 underneath the same wrapper, for the side-by-side ratio


def _bus(port: int, secrets: str, user: str, batched_io: bool = True) -> BusConfig:
    return BusConfig(port=port, password_file=f"{secrets}/{{node}}.password", batched_io=batched_io).for_node(user)


def _chunk(seq: int) -> bytes:
    data = np.zeros(HIDDEN_SIZE, dtype=np.float16).tobytes()
    return ContextChunk(session_id=SESSION, seq=seq, first_position=seq, count=1, hidden_size=HIDDEN_SIZE,
                        data=data, sent_at_ns=time.time_ns()).to_bytes()


def subscriber(port: int, secrets: str, ready: mp.Event, results: mp.Queue, expected: int, timeout_s: float,
               batched_io: bool = True) -> None:
    """Receives chunks through the wrapper (decoded and validated like a cloud node would)."""
    latencies_ms: list[float] = []
    seqs: set[int] = set()
    done = threading.Event()
    last_at = [0.0]

    def on_chunk(envelope: Envelope) -> None:
        chunk = envelope.message
        assert isinstance(chunk, ContextChunk)
        latencies_ms.append((time.time_ns() - chunk.sent_at_ns) / 1e6)
        seqs.add(chunk.seq)
        last_at[0] = time.perf_counter()
        if len(seqs) >= expected:
            done.set()

    def on_open(envelope: Envelope) -> None:
        request = envelope.message
        assert isinstance(request, SessionOpen)
        client.reply(envelope, SessionOpened(session_id=request.session_id, worker_id=CLOUD, ttl_s=60.0,
                                          max_positions=4096))  # the round trip

    client = BusClient(CLOUD, _bus(port, secrets, CLOUD, batched_io))
    client.subscribe(topics.INFER_UP, on_chunk, edge=EDGE, session=SESSION)
    client.subscribe(topics.INFER_OPEN, on_open, shared_group="cloud")
    client.connect()
    time.sleep(0.3)
    cpu_started = time.process_time()
    ready.set()
    done.wait(timeout_s)
    results.put({"received": len(seqs), "latencies_ms": latencies_ms, "last_at": last_at[0],
                 "cpu_s": time.process_time() - cpu_started})
    client.close()


def _busy_python(stop: threading.Event, running: threading.Event) -> None:
    """Python-heavy work, as the glue between torch ops is: it holds the GIL until the interpreter switches."""
    lower_thread_priority(COMPUTE_NICE)
    running.set()
    while not stop.is_set():
        total = 0
        for i in range(10_000):
            total += i * i


def _busy_torch(stop: threading.Event, running: threading.Event) -> None:
    import torch  # imported here so the other phases never pay for it

    # One intra-op thread: this measures what a computing thread does to the publisher's network
    # thread (the GIL), not what two saturated cores do to a broker and subscriber on the same host.
    torch.set_num_threads(1)
    lower_thread_priority(COMPUTE_NICE)  # as the edge's inference worker does (edge_node/service.py)
    a = torch.randn(512, 512)
    a @ a
    running.set()
    while not stop.is_set():
        a @ a  # releases the GIL inside; the Python between calls is what could starve paho


def publisher(port: int, secrets: str, phase: Phase, results: mp.Queue) -> None:
    client = BusClient(EDGE, _bus(port, secrets, EDGE, phase.batched_io)).connect()
    topic = topics.INFER_UP.topic(edge=EDGE, session=SESSION)
    stop = threading.Event()
    if phase.busy:
        running = threading.Event()
        busy = _busy_torch if phase.busy == "torch" else _busy_python
        threading.Thread(target=busy, args=(stop, running), daemon=True).start()
        running.wait(60)  # importing torch holds the GIL for seconds: start timing once it computes
        time.sleep(0.2)
    rtts_ms = []
    if phase.name == "rtt":
        request = SessionOpen(session_id=SESSION, edge_id=EDGE, model_id="bench", split_layer=20, hidden_size=HIDDEN_SIZE)
        for _ in range(phase.count):
            start = time.perf_counter()
            client.request(topics.INFER_OPEN, request, timeout_s=5)
            rtts_ms.append((time.perf_counter() - start) * 1e3)
        results.put({"rtts_ms": rtts_ms, "start": 0.0})
        client.close()
        return
    cpu_started = time.process_time()
    start = time.perf_counter()
    interval = 1.0 / phase.rate_per_s if phase.rate_per_s else 0.0
    for seq in range(phase.count):
        if interval:
            delay = start + seq * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # sleep, never spin: a spinning thread starves paho's network thread
        client.publish_bytes(topic, _chunk(seq), qos=phase.qos)
    stop.set()
    client.flush(120.0)  # every QoS 1 message acknowledged before we disconnect
    results.put({"start": start, "cpu_s": time.process_time() - cpu_started})
    time.sleep(0.5 if phase.qos == 0 else 0.0)  # QoS 0 has no acks: give the socket a moment
    client.close()


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_phase(port: int, secrets: str, phase: Phase, broker_pid: int) -> dict:
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    expected = phase.count if phase.name != "rtt" else 10**9
    sub = ctx.Process(target=subscriber, args=(port, secrets, ready, results, expected,
                                               60.0 if phase.name != "rtt" else 30.0, phase.batched_io))
    sub.start()
    ready.wait(30)
    pub_results = ctx.Queue()
    broker_cpu_started = _cpu_s(broker_pid)
    pub = ctx.Process(target=publisher, args=(port, secrets, phase, pub_results))
    pub.start()
    published = pub_results.get(timeout=120)
    if phase.name == "rtt":
        pub.join(30)
        sub.terminate()
        return published
    received = results.get(timeout=120)
    broker_cpu_s = _cpu_s(broker_pid) - broker_cpu_started
    pub.join(30)
    sub.join(30)
    cpu_us = {"publisher": published["cpu_s"], "broker": broker_cpu_s, "subscriber": received["cpu_s"]}
    return {**received, "start": published["start"],
            "cpu_us_per_msg": {role: round(seconds / phase.count * 1e6, 1) for role, seconds in cpu_us.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bus", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--paced", type=int, default=10_000, help="messages per paced run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config = BrokerConfig(port=free_port(), state_dir=f"{tmp}/broker", secrets_dir=f"{tmp}/secrets",
                              edge_users=(EDGE,), cloud_users=(CLOUD,))
        with LocalBroker(config) as broker:
            secrets, pid = config.secrets_dir, broker.process.pid
            flood = run_phase(config.port, secrets, Phase("flood", args.count, 0, qos=1), pid)
            paced = run_phase(config.port, secrets, Phase("paced", args.paced, 5000, qos=1), pid)
            busy = run_phase(config.port, secrets, Phase("busy", args.paced, 5000, qos=1, busy="torch"), pid)
            busy_python = run_phase(config.port, secrets, Phase("busy_python", args.paced, 5000, qos=1, busy="python"), pid)
            qos0 = run_phase(config.port, secrets, Phase("qos0", args.paced, 5000, qos=0), pid)
            rtt = run_phase(config.port, secrets, Phase("rtt", 500, 0, qos=1), pid)
            plain = run_phase(config.port, secrets, Phase("flood_plain", args.count, 0, qos=1, batched_io=False), pid)
    flood_s = flood["last_at"] - flood["start"] if flood["received"] else float("inf")
    plain_s = plain["last_at"] - plain["start"] if plain["received"] else float("inf")
    result = {
        "qos1_msgs_per_s": round(flood["received"] / flood_s, 1),
        "qos1_p50_ms": round(float(np.percentile(paced["latencies_ms"], 50)), 3),
        "qos1_p99_ms": round(float(np.percentile(paced["latencies_ms"], 99)), 3),
        "qos1_p50_ms_busy": round(float(np.percentile(busy["latencies_ms"], 50)), 3),
        "qos1_p99_ms_busy": round(float(np.percentile(busy["latencies_ms"], 99)), 3),
        "qos1_p50_ms_busy_python": round(float(np.percentile(busy_python["latencies_ms"], 50)), 3),
        "qos0_p50_ms": round(float(np.percentile(qos0["latencies_ms"], 50)), 3),
        "rtt_p50_ms": round(float(np.percentile(rtt["rtts_ms"], 50)), 3),
        "lost": (args.count - flood["received"]) + (args.paced - paced["received"]) + (args.paced - busy["received"])
        + (args.paced - qos0["received"]) + (args.count - plain["received"]) + (args.paced - busy_python["received"]),
        "message_bytes": len(_chunk(0)),
        "flood_cpu_us_per_msg": flood["cpu_us_per_msg"],  # where the CPU goes: all three share the host
        # The same flood through plain paho 2.2 (bus.batched_io = false), in the same run:
        "plain_paho_qos1_msgs_per_s": round(plain["received"] / plain_s, 1),
        "plain_paho_cpu_us_per_msg": plain["cpu_us_per_msg"],
        "batched_vs_plain_throughput": round(plain_s / flood_s, 2),
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
