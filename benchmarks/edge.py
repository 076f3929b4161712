"""Edge node benchmark: the real service (real broker, real HTTP, real SmolLM2 from the model store).

`.venv/bin/python -m benchmarks.edge --json` prints one JSON object as its last line:
cold_ttft_ms (request → first token, model not loaded), warm_ttft_ms (loaded), idle_unload_ok (unloaded
after a 1 s keep-alive), evictions_ok (memory budget honoured, least-recently-used idle model evicted,
pinned model kept), bad_inputs_survived (malformed HTTP bodies and MQTT payloads answered or logged,
node healthy after), http_tasks_per_s (tiny model, 4 concurrent clients), and the familiar APIs' streaming
rates (issue 20): generation_tokens_per_s (the node's own decode rate, measured inside it without HTTP),
ollama_client_tokens_per_s and openai_client_tokens_per_s (the same prompts and model streamed through the
official clients, each in a process of its own; goal >= 0.9 x generation_tokens_per_s), and
api_client_over_served: each client's rate over the node's own rate for the very same answer.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as in a real edge (edge_node/__main__.py)

import argparse
import concurrent.futures
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.report import print_result
from broker import topics
from broker.client import BusClient
from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port
from edge_node.compat_api.requests import GenerationRequest, Message
from edge_node.compat_api.routes import engine_for
from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from models.paths import default_store_root
from models.store import ModelStore
from models.tiny import write_tiny_model

FP32, BF16, INT8 = "smollm2-135m", "smollm2-135m-bf16", "smollm2-135m-int8"
# Time to first token depends on the prompt: a short chat turn (as an Ollama user would time it) is the
# headline; the QA task prompt (system turn + worked example, ~110 tokens) is reported beside it.
PROMPT = {"task_type": "chat", "prompt": "Say hello."}
QA_PROMPT = {"task_type": "QA", "prompt": "Context: The Rhine flows through Basel.\nQuestion: Which river flows through Basel?"}


def ttft_ms(result: dict) -> float:
    """What a caller waits for the first token: queue + model load + prompt + first token."""
    return (result["queue_wait_s"] + result["load_time_s"] + result["ttft_s"]) * 1e3


def run_task(url: str, model: str, prompt: dict | None = None, **extra: object) -> dict:
    body = {**(prompt or PROMPT), "model_name": model, "wait": True, "max_new_tokens": 16, **extra}
    response = httpx.post(f"{url}/perform_task", json=body, timeout=300)
    response.raise_for_status()
    return response.json()


def loaded(url: str) -> list[str]:
    return [m["name"] for m in httpx.get(f"{url}/api/ps", timeout=10).json()["models"] if not m["loading"]]


def bad_inputs(url: str, bus: BusConfig, service: EdgeService) -> int:
    bodies = [b"", b"{", b"[]", b"null", b"42", b'"text"', b'{"task_type": "TC"}', b'{"prompt": "x"}',
              b'{"task_type": "TC", "model_name": 5, "prompt": "x"}', b'{"task_type": "TC", "model_name": "m", "prompt": ""}',
              b'{"task_type": "TC", "model_name": "nope", "prompt": "x"}', b'{"task_type": [], "model_name": "m", "prompt": "x"}',
              b'{"task_type": "TC", "model_name": "m", "prompt": "x", "max_new_tokens": 1e9}',
              b'{"task_type": "TC", "model_name": "m", "prompt": "x", "priority": "high"}', b"\xff\xfe\x00",
              b'{"task_type": "TC", "model_name": "m", "prompt": "x", "keep_alive_s": "5m"}', b"x" * 400_000]
    answered = 0
    for body in bodies:
        response = httpx.post(f"{url}/perform_task", content=body, headers={"content-type": "application/json"}, timeout=30)
        answered += 400 <= response.status_code < 500 and "error" in response.json()
    payloads = [b"", b"\x00", b"\xc1\xc1", b"\x81\xa1t\xadtask_dispatch", b"\x92\x01\x02", b"z" * 500_000,
                b"\x82\xa1t\xadtask_dispatch\xa1v\x01"]
    before = service.presence.bus.stats.counts["malformed"]
    with BusClient("center", bus.for_node("center")) as center:
        for payload in payloads:
            center.publish_bytes(topics.TASK_DISPATCH.topic(node=service.node_id), payload, wait_s=10)
    deadline = time.monotonic() + 10
    while service.presence.bus.stats.counts["malformed"] - before < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = service.presence.bus.stats.counts["malformed"] - before
    healthy = httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    return int(answered + logged) if healthy else 0


API_PROMPTS = ("Write a short story about a robot who learns to paint.", "Explain how rain forms, step by step.",
               "Describe a walk through a forest in autumn.")


def api_rates(service: EdgeService, rounds: int, tokens: int) -> dict[str, object]:
    """Decode rates (tokens after the first per second after the first) of the node itself and of both clients,
    interleaved prompt by prompt. The machine's load drifts (other processes share its cores), so each client's
    ratio is the median of its answers' rates over the node's own answer to the same prompt just before."""
    engine = engine_for(service)  # the node's own generation path, as the HTTP routes use it
    totals = {name: [0, 0.0] for name in ("node", "ollama", "openai")}
    counts: dict[str, list[int]] = {name: [] for name in totals}
    first_s: dict[str, list[float]] = {name: [] for name in totals}
    ratios: dict[str, list[float]] = {"ollama": [], "openai": []}
    served: dict[str, list[float]] = {"ollama": [], "openai": []}  # the node's own rate while a client streamed
    for round_index in range(rounds):
        for prompt_index, prompt in enumerate(API_PROMPTS):
            request = GenerationRequest(FP32, messages=(Message("user", prompt),), max_new_tokens=tokens)
            outcome = engine.submit(request).result()  # on a generation thread, as an HTTP request would run
            totals["node"][0] += len(outcome.token_ids) - 1
            totals["node"][1] += outcome.eval_s
            counts["node"].append(len(outcome.token_ids))
            first_s["node"].append(outcome.load_s + outcome.prompt_eval_s)
            # Whichever client follows the node's own run meets a warmer (or busier) machine: alternate.
            for client in ("ollama", "openai")[:: 1 if (round_index + prompt_index) % 2 == 0 else -1]:
                command = [sys.executable, "-m", "benchmarks.api_clients", "--client", client, "--url", service.http.url,
                           "--model", FP32, "--prompt", prompt, "--tokens", str(tokens)]
                run = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
                totals[client][0] += run["tokens"] - 1
                totals[client][1] += run["last_s"] - run["first_s"]
                counts[client].append(run["tokens"])
                first_s[client].append(run["first_s"])
                ratios[client].append(run["decode_tokens_per_s"] / outcome.decode_tokens_per_s)
                served[client].append(run["decode_tokens_per_s"] / run["server_tokens_per_s"])
    rate = {name: n / s if s > 0 else 0.0 for name, (n, s) in totals.items()}
    return {
        "generation_tokens_per_s": round(rate["node"], 2),
        "ollama_client_tokens_per_s": round(rate["ollama"], 2),
        "openai_client_tokens_per_s": round(rate["openai"], 2),
        "ollama_over_generation": round(statistics.median(ratios["ollama"]), 3),
        "openai_over_generation": round(statistics.median(ratios["openai"]), 3),
        "api_ratio_range": {client: [round(min(r), 3), round(max(r), 3)] for client, r in ratios.items()},
        # The client's rate over the node's rate for the very same answer: no load drift between the two.
        "api_client_over_served": {client: round(statistics.median(r), 3) for client, r in served.items()},
        "api_first_token_ms": {name: round(statistics.mean(values) * 1e3, 1) for name, values in first_s.items()},
        "api_same_token_counts": counts["node"] == counts["ollama"] == counts["openai"],
        "api_tokens_per_answer": counts["node"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge", description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tiny-tasks", type=int, default=40)
    parser.add_argument("--api-rounds", type=int, default=3, help="rounds over the API prompts")
    parser.add_argument("--api-tokens", type=int, default=48, help="tokens per API answer")
    args = parser.parse_args(argv)
    store = ModelStore(default_store_root())
    sizes = {model: store.manifest(model).bytes for model in (FP32, BF16, INT8)}
    with tempfile.TemporaryDirectory() as tmp:
        broker_config = BrokerConfig(port=free_port(), state_dir=f"{tmp}/broker", secrets_dir=f"{tmp}/secrets")
        with LocalBroker(broker_config):
            bus = BusConfig(port=broker_config.port, password_file=f"{broker_config.secrets_dir}/{{node}}.password")
            # Room for the fp32 and the bf16 model, not for a third: loading int8 must evict someone.
            budget_mb = (sizes[FP32] + sizes[BF16]) // 2**20 + 50
            config = dataclasses.replace(
                EdgeConfig(), node_id="pi-01", bus=bus, http_port=0, state_dir=f"{tmp}/state",
                model_store=str(store.root), memory_budget_mb=budget_mb, max_loaded_models=3, early_exit=False,
            )
            service = EdgeService(config).start()
            url = service.http.url
            try:
                cold = run_task(url, FP32)
                warm = run_task(url, FP32)
                warm_qa = run_task(url, FP32, QA_PROMPT)
                run_task(url, INT8, keep_alive_s=1)
                time.sleep(2.5)
                idle_unload_ok = INT8 not in loaded(url) and FP32 in loaded(url)
                # Eviction: pin fp32, load bf16 (fits), touch fp32, then int8 needs room: bf16 must go.
                service.cache.pin(FP32)
                run_task(url, BF16)
                run_task(url, FP32)
                run_task(url, INT8)
                resident = loaded(url)
                held = sum(r.size_bytes for r in service.cache.status())
                evictions_ok = FP32 in resident and INT8 in resident and BF16 not in resident and held <= budget_mb * 2**20
                survived = bad_inputs(url, bus, service)
                api = api_rates(service, args.api_rounds, args.api_tokens)
            finally:
                service.stop()
            tiny_root = Path(tmp) / "tiny"
            write_tiny_model(tiny_root, "tiny-llama")
            tiny = EdgeService(dataclasses.replace(config, node_id="pi-02", model_store=str(tiny_root),
                                                   memory_budget_mb=0, queue_capacity=1000)).start()
            try:
                run_task(tiny.http.url, "tiny-llama")
                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    results = list(pool.map(lambda _: run_task(tiny.http.url, "tiny-llama"), range(args.tiny_tasks)))
                tasks_per_s = sum(r["status"] == "ok" for r in results) / (time.perf_counter() - start)
            finally:
                tiny.stop()
    result = {
        "cold_ttft_ms": round(ttft_ms(cold), 1),
        "cold_load_ms": round(cold["load_time_s"] * 1e3, 1),
        "warm_ttft_ms": round(ttft_ms(warm), 1),
        "cold_over_warm": round(ttft_ms(cold) / ttft_ms(warm), 1),
        "warm_ttft_ms_qa_prompt": round(ttft_ms(warm_qa), 1),
        "idle_unload_ok": idle_unload_ok,
        "evictions_ok": evictions_ok,
        "bad_inputs_survived": survived,
        "http_tasks_per_s": round(tasks_per_s, 1),
        **api,
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
