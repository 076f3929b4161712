"""Links benchmark: what the emulated deployment (emulation/) really delivers, next to what it promises.

`.venv/bin/python -m benchmarks.links --json` prints one JSON object as its last line. For each link
profile (lan, wan, cellular), through a real Mosquitto: `rtt_ms_p50` / `rtt_ms_p90` of MQTT 5 QoS 1
request/response from an edge behind the profile's proxy (bus.link_profile) to a cloud worker on a
direct connection, and `upload_mbit_s`: ~3.3 MB of 64 KiB hidden-state chunks (QoS 1) published by the
edge, timed from the first publish until the last arrives at the cloud worker. Then the edge CPU
quota: per-token greedy decode time of the real model (one torch thread) in subprocesses limited to
one full core and to a quarter core by emulation/cpu_quota.py, and `quota_slowdown`, their ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.report import print_result
from broker import topics
from broker.client import BusClient, Envelope
from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port
from broker.messages.inference import ContextChunk, SessionOpen, SessionOpened
from emulation.cpu_quota import DEFAULT_CGROUP_ROOT, limit_cpu
from emulation.link_profiles import PROFILES

EDGE, CLOUD, SESSION = "pi-01", "cloud-1", "links"
HIDDEN_SIZE = 576  # SmolLM2-135M
CHUNK_TOKENS = 57  # 57 x 576 fp16 values = 65,664 bytes per chunk, ~64 KiB
MODEL_ID = "smollm2-135m"  # fp32, the full 30 layers
QUOTAS = (1.0, 0.25)


def _bus(port: int, secrets: str, user: str, link_profile: str = "lan") -> BusConfig:
    return BusConfig(port=port, password_file=f"{secrets}/{{node}}.password", link_profile=link_profile).for_node(user)


class Cloud:
    """The responder on a direct connection: answers session opens, counts uploaded chunks."""

    def __init__(self, port: int, secrets: str, expected_chunks: int) -> None:
        self.expected_chunks = expected_chunks
        self.chunks = 0
        self.last_at = 0.0
        self.done = threading.Event()
        self.client = BusClient(CLOUD, _bus(port, secrets, CLOUD)).connect()
        self.client.subscribe(topics.INFER_OPEN, self._on_open, shared_group="cloud", wait_s=10)
        self.client.subscribe(topics.INFER_UP, self._on_chunk, edge=EDGE, session=SESSION, wait_s=10)

    def _on_open(self, envelope: Envelope) -> None:
        self.client.reply(envelope, SessionOpened(session_id=SESSION, worker_id=CLOUD, ttl_s=60.0, max_positions=4096))

    def _on_chunk(self, envelope: Envelope) -> None:
        self.chunks += 1
        if self.chunks >= self.expected_chunks:
            self.last_at = time.perf_counter()
            self.done.set()


def measure_profile(name: str, port: int, secrets: str, requests: int, upload_chunks: int) -> dict:
    """RTT percentiles and upload rate of an edge on link profile `name`."""
    cloud = Cloud(port, secrets, upload_chunks)
    edge = BusClient(EDGE, _bus(port, secrets, EDGE, link_profile=name)).connect()
    try:
        request = SessionOpen(session_id=SESSION, edge_id=EDGE, model_id="bench", split_layer=20, hidden_size=HIDDEN_SIZE)
        rtts_ms = []
        for i in range(requests + 3):  # the first three warm the connection up
            started = time.perf_counter()
            edge.request(topics.INFER_OPEN, request, timeout_s=10)
            if i >= 3:
                rtts_ms.append((time.perf_counter() - started) * 1e3)
        data = np.zeros(CHUNK_TOKENS * HIDDEN_SIZE, dtype=np.float16).tobytes()
        chunks = [ContextChunk(session_id=SESSION, seq=seq, first_position=seq * CHUNK_TOKENS, count=CHUNK_TOKENS,
                               hidden_size=HIDDEN_SIZE, data=data) for seq in range(upload_chunks)]
        started = time.perf_counter()
        for chunk in chunks:
            edge.publish(topics.INFER_UP, chunk, edge=EDGE, session=SESSION)
        if not cloud.done.wait(120):
            raise TimeoutError(f"{name}: {cloud.chunks} of {upload_chunks} chunks arrived")
        upload_s = cloud.last_at - started
    finally:
        edge.close()
        cloud.client.close()
    profile = PROFILES[name]
    upload_bytes = upload_chunks * len(data)
    return {
        "rtt_ms_p50": round(float(np.percentile(rtts_ms, 50)), 2),
        "rtt_ms_p90": round(float(np.percentile(rtts_ms, 90)), 2),
        "upload_mbit_s": round(upload_bytes * 8 / upload_s / 1e6, 2),
        "upload_bytes": upload_bytes,
        "promised_rtt_ms": round(profile.rtt_s * 1e3, 1),
        "promised_upload_mbit_s": round(profile.up.rate_mbit_s, 1) if profile.up.rate_bytes_per_s else None,
    }


def quota_worker(quota: float, tokens: int, cgroup_root: str, results: mp.Queue) -> None:
    """In its own process: go under `quota` first (as an edge does), then load the model and time greedy
    decoding on one torch thread."""
    limit = limit_cpu(quota, f"bench-quota-{os.getpid()}", cgroup_root=Path(cgroup_root))
    try:
        import torch

        from models.paths import default_store_root
        from models.store import ModelStore

        torch.set_num_threads(1)
        model = ModelStore(default_store_root()).load(MODEL_ID)
        limit.install_on_layers(model.model.model.layers)
        prompt_ids = model.encode_chat("Explain in a few sentences why the sky is blue.")
        model.generate_greedy(prompt_ids, 8, stop_at_eos=False)  # warm-up
        started = time.perf_counter()
        generated = model.generate_greedy(prompt_ids, tokens, stop_at_eos=False)
        elapsed_s = time.perf_counter() - started
        assert len(generated) >= tokens, f"generated {len(generated)} of {tokens} tokens"
        results.put({"quota": quota, "mechanism": limit.mechanism, "per_token_ms": elapsed_s / tokens * 1e3})
    finally:
        limit.release()


def measure_quota(tokens: int, repeats: int, cgroup_root: str) -> dict:
    """Per-token decode time under each quota, runs alternating so both see the same machine; the median of each."""
    ctx = mp.get_context("spawn")
    runs: dict[float, list[float]] = {quota: [] for quota in QUOTAS}
    mechanisms = set()
    schedule = [quota for _ in range(repeats) for quota in QUOTAS]
    for quota in tqdm(schedule, desc="quota runs", unit="run", file=sys.stderr):
        results = ctx.Queue()
        process = ctx.Process(target=quota_worker, args=(quota, tokens, cgroup_root, results))
        process.start()
        result = results.get(timeout=600)
        process.join(60)
        runs[quota].append(result["per_token_ms"])
        mechanisms.add(result["mechanism"])
    full, quarter = statistics.median(runs[1.0]), statistics.median(runs[0.25])
    return {
        "per_token_ms_quota_1_0": round(full, 2),
        "per_token_ms_quota_0_25": round(quarter, 2),
        "quota_slowdown": round(quarter / full, 2),
        "quota_mechanism": "/".join(sorted(mechanisms)),
        "quota_runs_per_token_ms": {str(quota): [round(ms, 2) for ms in times] for quota, times in runs.items()},
        "quota_model": MODEL_ID,
        "quota_tokens": tokens,
    }


def goals(result: dict) -> dict[str, bool]:
    wan, cellular = result["profiles"]["wan"], result["profiles"]["cellular"]
    met = {
        "wan_rtt_ms_p50_50_60": 50 <= wan["rtt_ms_p50"] <= 60,
        "wan_upload_mbit_s_17_21": 17 <= wan["upload_mbit_s"] <= 21,
        "cellular_rtt_ms_p50_80_95": 80 <= cellular["rtt_ms_p50"] <= 95,
    }
    if "quota_slowdown" in result:
        met["quota_slowdown_3_5_5"] = 3 <= result["quota_slowdown"] <= 5.5
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.links", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--requests", type=int, default=50, help="request/response round trips per profile")
    parser.add_argument("--upload-chunks", type=int, default=50, help="64 KiB chunks uploaded per profile")
    parser.add_argument("--tokens", type=int, default=48, help="greedy tokens decoded per quota run")
    # 5, not 3: on this VM single quarter-core runs spread 3.6-7.7 x a full core (docs/benchmarks.md, session 11)
    parser.add_argument("--quota-repeats", type=int, default=5, help="runs per quota (alternating; median kept)")
    parser.add_argument("--skip-quota", action="store_true", help="links only (no model needed)")
    parser.add_argument("--cgroup-root", default=str(DEFAULT_CGROUP_ROOT),
                        help="cgroup v1 cpu hierarchy; a path that is none (e.g. /nonexistent) measures the "
                             "per-layer delay fallback instead")
    args = parser.parse_args(argv)
    profiles = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = BrokerConfig(port=free_port(), state_dir=f"{tmp}/broker", secrets_dir=f"{tmp}/secrets",
                              edge_users=(EDGE,), cloud_users=(CLOUD,))
        with LocalBroker(config):
            for name in tqdm(PROFILES, desc="link profiles", unit="profile", file=sys.stderr):
                profiles[name] = measure_profile(name, config.port, config.secrets_dir, args.requests, args.upload_chunks)
    result: dict = {"profiles": profiles}
    if not args.skip_quota:
        result.update(measure_quota(args.tokens, args.quota_repeats, args.cgroup_root))
    result["goals"] = goals(result)
    result["host"] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                      "cgroup_v1_cpu": Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists()}
    result["median_rtt_overhead_ms"] = round(statistics.median(
        p["rtt_ms_p50"] - p["promised_rtt_ms"] for p in profiles.values()), 2)
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
