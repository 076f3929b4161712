"""Cloud-edge collaborative generation benchmark (CE-CoLLM) on the real model, four modes in one run.

`.venv/bin/python -m benchmarks.collab --json` starts a local Mosquitto, a cloud worker process
(`python -m cloud_node`) and an edge process (this module with `--edge-worker`), and runs held-out
prompts of all five task types (two each by default), 64 new tokens each, in `cloud_only`, `naive_split`, `standalone` and
`collaborative` modes. The collaborative thresholds are chosen on the exit heads' calibration split
(never on these prompts). Last, one collaborative answer runs while the parent kills the cloud
process mid-answer: the edge must finish it locally. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_MODEL = "smollm2-135m"
MODES = ("cloud_only", "naive_split", "standalone", "collaborative")
HIDDEN_BYTES_FP16 = 576 * 2
PAPER = {"naive_bytes_per_response": 112e6, "ce_collm_bytes_per_response": 957e3, "cloud_token_share": 0.4958}


# ---- edge process ---------------------------------------------------------------------------------


def edge_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from broker.client import BusClient
    from broker.config import BusConfig
    from edge_node.collab.config import CollabConfig
    from edge_node.collab.generation import generate
    from edge_node.collab.link import CollabClient
    from models.exit_corpus import split
    from models.paths import default_store_root
    from models.store import ModelStore

    store = ModelStore(default_store_root())
    model = with_committed_exits(store.load(BASE_MODEL))
    point = collaborative_point(store, model, args.target_agreement)
    prompts = held_out_prompts(split("held_out"), args.prompts_per_type)
    bus = BusClient("pi-01", BusConfig(port=args.port, password_file=args.password_file).for_node("pi-01")).connect()
    client = CollabClient(bus, "pi-01")
    base = CollabConfig(cloud_deadline_s=args.deadline_s, exit_thresholds=tuple(r.threshold for r in point.policy.rules))
    responses = []
    from tqdm import tqdm

    for prompt in tqdm(prompts, desc="prompts (all modes each)", unit="prompt", file=sys.stderr):
        prompt_ids = model.encode_chat(prompt.text)
        row = {"task_type": prompt.task_type, "prompt_tokens": len(prompt_ids), "modes": {}}
        for mode in args.modes.split(","):
            generation = generate(model, prompt_ids, args.new_tokens, replace_mode(base, mode), client,
                                  stop_at_eos=args.stop_at_eos)
            row["modes"][mode] = summarize(model, prompt_ids, generation)
            log(f"{prompt.task_type:20s} {mode:14s} {len(generation.token_ids):3d} tok {generation.total_s:6.2f} s "
                f"up {generation.bytes_up:>10d} B cloud {generation.cloud_requests}")
        responses.append(row)
    fallback = fallback_answer(model, client, base, prompts[0], args)
    bus.close()
    Path(args.out).write_text(json.dumps({
        "responses": responses, "fallback": fallback,
        "operating_point": {"target_agreement": args.target_agreement, "exit_fraction": point.exit_fraction,
                            "agreement": point.agreement, "thresholds": [r.threshold for r in point.policy.rules]},
    }))


def with_committed_exits(model):
    """The store's model, with the committed exit heads and policy if the store predates them."""
    if model.exit_heads is not None and model.exit_policy is not None:
        return model
    from models.exit_heads import ExitHeads
    from models.exit_policy import ExitPolicy

    heads_dir = Path(__file__).resolve().parent.parent / "models" / "exit_heads"
    model.exit_heads = ExitHeads.load(heads_dir / "exit_heads.safetensors")
    model.exit_policy = ExitPolicy.from_json((heads_dir / "exit_policy.json").read_text())
    return model


def collaborative_point(store, model, target_agreement: float):
    """Thresholds for collaborative mode, chosen on the calibration split's generated positions."""
    from edge_node.collab.operating_point import choose_collab_point
    from models.exit_corpus import split
    from models.exit_data import collect
    from models.exit_training import TrainingConfig, head_features

    config = TrainingConfig()
    data = collect(model, split("calibration"), config.exit_layers, config.max_new_tokens, 0, config.seed,
                   Path(store.root) / ".exit-data")
    features, correct = head_features(model.exit_heads, data.subset(data.is_generated), model)
    return choose_collab_point(model.exit_policy, features, correct, target_agreement)


def held_out_prompts(prompts, per_type: int):
    chosen, seen = [], {}
    for prompt in prompts:
        if seen.get(prompt.task_type, 0) < per_type:
            seen[prompt.task_type] = seen.get(prompt.task_type, 0) + 1
            chosen.append(prompt)
    assert len(seen) == 5, f"held-out split lacks task types: {sorted(seen)}"
    return chosen


def replace_mode(config, mode: str):
    import dataclasses

    return dataclasses.replace(config, mode=mode)


def summarize(model, prompt_ids: list[int], generation) -> dict:
    import torch

    ids = prompt_ids + list(generation.token_ids)
    with torch.no_grad():
        logits = model.full_logits(torch.tensor([ids]))[0]  # (T, V)
    full_choice = logits[len(prompt_ids) - 1 : len(ids) - 1].argmax(dim=-1).tolist()
    agree = sum(int(a == b) for a, b in zip(full_choice, generation.token_ids, strict=True))
    return {
        "token_ids": list(generation.token_ids), "tokens": len(generation.token_ids),
        "agreeing_tokens": agree, "agrees": [int(a == b) for a, b in zip(full_choice, generation.token_ids, strict=True)], "ttft_ms": generation.ttft_s * 1e3, "total_s": generation.total_s,
        "bytes_up": generation.bytes_up, "bytes_down": generation.bytes_down,
        "cloud_requests": generation.cloud_requests, "fallback": generation.fallback,
        "decided_by": [t.decided_by for t in generation.tokens], "layers": [t.layer for t in generation.tokens],
    }


def fallback_answer(model, client, base, prompt, args) -> dict:
    """One collaborative answer at threshold 1.0 (every token from the cloud) while the parent kills the cloud."""
    import dataclasses

    from edge_node.collab.generation import generate

    config = dataclasses.replace(base, threshold=1.0, exit_thresholds=(), cloud_deadline_s=2.0)

    def kill_after(token) -> None:
        if token.position == len(prompt_ids) + 7:
            print("KILL_CLOUD", flush=True)
            sys.stdin.readline()  # the parent answers once the cloud process is gone

    prompt_ids = model.encode_chat(prompt.text)
    generation = generate(model, prompt_ids, args.new_tokens, config, client, on_token=kill_after,
                          stop_at_eos=args.stop_at_eos)
    by = [t.decided_by for t in generation.tokens]
    finished = len(generation.token_ids) == args.new_tokens or generation.token_ids[-1] == model.eos_token_id
    return {"fallback": generation.fallback, "fallback_position": generation.fallback_position,
            "cloud_tokens": by.count("cloud"), "local_tokens": by.count("fallback"),
            "completed": bool(generation.fallback and finished and by.count("fallback") > 0)}


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---- parent: broker, cloud process, edge process, report -------------------------------------------


def run(args: argparse.Namespace) -> dict:
    from broker.launcher import BrokerConfig, LocalBroker, free_port

    tmp = Path(tempfile.mkdtemp(prefix="collab-bench-"))
    broker = LocalBroker(BrokerConfig(port=free_port(), state_dir=str(tmp / "broker"), secrets_dir=str(tmp / "secrets"),
                                      cloud_users=("cloud-1",), edge_users=("pi-01",))).start()
    password_file = str(tmp / "secrets" / "{node}.password")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cloud_log = (tmp / "cloud.log").open("w")
    cloud = subprocess.Popen(
        [sys.executable, "-m", "cloud_node", "--node-id", "cloud-1", "--broker", f"127.0.0.1:{broker.config.port}",
         "--set", f"bus.password_file={password_file}", "--set", f"state_dir={tmp / 'state'}",
         "--set", f"preload_model={BASE_MODEL}", "--set", "torch_threads=1"],
        env=env, stdout=subprocess.DEVNULL, stderr=cloud_log,
    )
    out = tmp / "edge.json"
    edge = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.collab", "--edge-worker", "--port", str(broker.config.port),
         "--password-file", password_file, "--out", str(out), "--new-tokens", str(args.new_tokens),
         "--prompts-per-type", str(args.prompts_per_type), "--target-agreement", str(args.target_agreement),
         "--deadline-s", str(args.deadline_s), "--modes", args.modes, *(["--stop-at-eos"] if args.stop_at_eos else [])],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert edge.stdout is not None and edge.stdin is not None
        for line in edge.stdout:
            if line.strip() == "KILL_CLOUD":
                cloud.kill()  # SIGKILL: no goodbye, as a crash would
                cloud.wait(30)
                edge.stdin.write("killed\n")
                edge.stdin.flush()
        edge.wait(timeout=args.timeout_s)
    finally:
        for process in (edge, cloud):
            if process.poll() is None:
                process.kill()
        broker.stop()
        cloud_log.close()
    if edge.returncode != 0:
        raise SystemExit(f"edge process failed ({edge.returncode}); cloud log in {tmp / 'cloud.log'}")
    return report(json.loads(out.read_text()))


def report(raw: dict) -> dict:
    responses = raw["responses"]
    modes = {}
    for mode in [m for m in MODES if m in responses[0]["modes"]]:
        rows = [r["modes"][mode] for r in responses]
        tokens = sum(r["tokens"] for r in rows)
        modes[mode] = {
            "tokens_per_s": round(tokens / sum(r["total_s"] for r in rows), 2),
            "ttft_ms": round(statistics.mean(r["ttft_ms"] for r in rows), 1),
            "bytes_up_per_response": round(statistics.mean(r["bytes_up"] for r in rows)),
            "bytes_down_per_response": round(statistics.mean(r["bytes_down"] for r in rows)),
            "cloud_request_ratio": round(sum(r["cloud_requests"] for r in rows) / tokens, 4),
            "agreement": round(sum(r["agreeing_tokens"] for r in rows) / tokens, 4),
            "identical_responses": round(statistics.mean(
                float(r["token_ids"] == c["modes"]["cloud_only"]["token_ids"]) for r, c in zip(rows, responses, strict=True)), 4),
            "fallbacks": sum(int(r["fallback"]) for r in rows),
            "agreement_by_source": agreement_by_source(rows),
        }
    floor = statistics.mean((r["prompt_tokens"] + r["modes"]["collaborative"]["tokens"]) * HIDDEN_BYTES_FP16
                            for r in responses)
    collaborative, naive = modes["collaborative"], modes.get("naive_split", {"bytes_up_per_response": 0})
    return {
        "model": BASE_MODEL, "responses": len(responses), "new_tokens": max(r["modes"]["cloud_only"]["tokens"] for r in responses),
        "hidden_floor_bytes": round(floor),
        "modes": modes,
        "fallback_completed": raw["fallback"]["completed"],
        "fallback": raw["fallback"],
        "operating_point": raw["operating_point"],
        "goals": {
            "up_within_1_25_floor": collaborative["bytes_up_per_response"] <= 1.25 * floor,
            "up_50x_below_naive": naive["bytes_up_per_response"] >= 50 * collaborative["bytes_up_per_response"],
            "agreement_0_90": collaborative["agreement"] >= 0.90,
            "cloud_ratio_0_60": collaborative["cloud_request_ratio"] <= 0.60,
        },
        "paper": PAPER,
    }


def agreement_by_source(rows: list[dict]) -> dict[str, float]:
    """Agreement of the tokens decided at each place (edge exit layer, cloud), to see where errors come from."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        for by, layer, agrees in zip(row["decided_by"], row["layers"], row["agrees"], strict=True):
            key = f"edge@{layer}" if by == "exit" else by
            counts.setdefault(key, [0, 0])
            counts[key][0] += agrees
            counts[key][1] += 1
    return {key: round(agreed / total, 4) for key, (agreed, total) in sorted(counts.items())}


def table(result: dict) -> str:
    lines = ["| mode | tokens/s | TTFT ms | bytes up / response | bytes down / response | cloud ratio | agreement | identical |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, m in result["modes"].items():
        lines.append(f"| {mode} | {m['tokens_per_s']} | {m['ttft_ms']} | {m['bytes_up_per_response']:,} | "
                     f"{m['bytes_down_per_response']:,} | {m['cloud_request_ratio']} | {m['agreement']} | {m['identical_responses']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collab", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    parser.add_argument("--new-tokens", type=int, default=64)
    # 20 responses: with 10, one run's agreement moved by +-0.012 (binomial noise over 640 tokens).
    parser.add_argument("--prompts-per-type", type=int, default=4)
    parser.add_argument("--stop-at-eos", action="store_true",
                        help="end answers at <|im_end|> (default: exactly --new-tokens tokens each, as the issue asks)")
    # The goal (0.90) plus the same 0.02 margin the standalone exit policy is calibrated with.
    parser.add_argument("--target-agreement", type=float, default=0.92, help="collaborative agreement on calibration")
    parser.add_argument("--deadline-s", type=float, default=20.0, help="cloud deadline per token (normal modes)")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset (sensitivity runs)")
    parser.add_argument("--edge-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--password-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.edge_worker:
        edge_worker(args)
        return 0
    started = time.time()
    result = run(args)
    result["wall_s"] = round(time.time() - started, 1)
    if not args.json:
        print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
