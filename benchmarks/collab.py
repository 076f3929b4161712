"""Cloud-edge collaboration benchmark on the real model: every mode, two link profiles, concurrent sessions.

`.venv/bin/python -m benchmarks.collab --json` starts, per link profile (`lan`, `wan`), a local
Mosquitto, a cloud worker process (`python -m cloud_node`) and an edge process
(`benchmarks.collab_edge.profile_worker`) on that profile under `cpu_quota=0.25`, and runs held-out
prompts of all five task types (`--prompts-per-type` each), 64 new tokens each, in `cloud_only`,
`naive_split`, `standalone`, `collaborative` and `speculative` modes; on `lan` also `speculative`
and `collaborative` with int8 hidden states. The collaborative thresholds are chosen on the exit
heads' calibration split (never on these prompts). On `lan`, one speculative answer runs while the
parent kills the cloud process mid-answer: the edge must finish it locally. Then `cloud_batching`:
1, 4 and 8 concurrent sessions (separate edge ids and connections, no quota) against one cloud
worker, `cloud_only` and `speculative`. The last stdout line is one JSON object.

The profiles run `--model` (default the lossless q4 encoding, the variant a Pi holds) on the edge and
the cloud alike; the batching section runs `--batching-model` (default the base fp32 model).
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
from collections import Counter
from pathlib import Path

# The profiles' edge runs the lossless 4-bit encoding of SmolLM2-135M (its fp32 weights were dequantized from
# it): the variant a Pi holds (docs/pi.md); every mode, the cloud included, runs that model id. The batching
# section measures the cloud worker on the base model it serves by default, as it always has.
MODEL = "smollm2-135m-q4"
BATCHING_MODEL = "smollm2-135m"
MODES = ("cloud_only", "naive_split", "standalone", "collaborative", "speculative")
PROFILES = ("lan", "wan")
HIDDEN_BYTES_FP16 = 576 * 2
PAPER = {"naive_bytes_per_response": 112e6, "ce_collm_bytes_per_response": 957e3, "cloud_token_share": 0.4958}
EDGES = tuple(f"pi-{index:02d}" for index in range(1, 9))


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---- parent: broker, cloud process, edge process, report -------------------------------------------


class Stage:
    """A broker and one cloud worker process for one part of the run; `stop()` ends both."""

    def __init__(self, name: str, model: str) -> None:
        from broker.launcher import BrokerConfig, LocalBroker, free_port

        self.model = model
        self.tmp = Path(tempfile.mkdtemp(prefix=f"collab-bench-{name}-"))
        self.broker = LocalBroker(BrokerConfig(port=free_port(), state_dir=str(self.tmp / "broker"),
                                               secrets_dir=str(self.tmp / "secrets"), cloud_users=("cloud-1",),
                                               edge_users=EDGES)).start()
        self.password_file = str(self.tmp / "secrets" / "{node}.password")
        self.env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.cloud_log = (self.tmp / "cloud.log").open("w")
        self.cloud = subprocess.Popen(
            [sys.executable, "-m", "cloud_node", "--node-id", "cloud-1", "--broker", f"127.0.0.1:{self.broker.config.port}",
             "--set", f"bus.password_file={self.password_file}", "--set", f"state_dir={self.tmp / 'state'}",
             "--set", f"preload_model={model}", "--set", "torch_threads=1"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.cloud_log,
        )

    def edge(self, worker: str, args: argparse.Namespace, extra: list[str]) -> dict:
        """Run an edge worker process to its end (killing the cloud when it asks); its JSON output."""
        out = self.tmp / f"{worker}.json"
        edge = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.collab", f"--{worker}", "--port", str(self.broker.config.port),
             "--password-file", self.password_file, "--out", str(out), "--new-tokens", str(args.new_tokens),
             "--model", self.model,
             *(["--target-agreement", str(args.target_agreement)] if args.target_agreement is not None else []),
             "--required-agreement", str(args.required_agreement), "--deadline-s", str(args.deadline_s),
             "--agreement-budget", args.agreement_budget,
             "--cloud-pid", str(self.cloud.pid), *(["--stop-at-eos"] if args.stop_at_eos else []), *extra],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert edge.stdout is not None and edge.stdin is not None
            for line in edge.stdout:
                if line.strip() == "KILL_CLOUD":
                    self.cloud.kill()  # SIGKILL: no goodbye, as a crash would
                    self.cloud.wait(30)
                    edge.stdin.write("killed\n")
                    edge.stdin.flush()
            edge.wait(timeout=args.timeout_s)
        finally:
            if edge.poll() is None:
                edge.kill()
        if edge.returncode != 0:
            raise SystemExit(f"edge process {worker} failed ({edge.returncode}); cloud log in {self.tmp / 'cloud.log'}")
        return json.loads(out.read_text())

    def stop(self) -> None:
        if self.cloud.poll() is None:
            self.cloud.kill()
            self.cloud.wait(30)
        self.broker.stop()
        self.cloud_log.close()


def run(args: argparse.Namespace) -> dict:
    raw: dict = {"profiles": {}, "model": args.model}
    for profile in [name for name in args.profiles.split(",") if name]:  # --profiles "": batching only
        stage = Stage(profile, args.model)
        try:
            lan = profile == "lan"
            raw["profiles"][profile] = stage.edge("profile-worker", args, [
                "--link-profile", profile, "--cpu-quota", str(args.cpu_quota), "--modes", args.modes,
                "--speculative-options", args.speculative_options,
                "--prompts-per-type", str(args.prompts_per_type), "--prompt-split", args.prompt_split,
                "--naive-prompts", str(args.naive_prompts),
                "--int8-modes", "speculative,collaborative" if lan and not args.skip_int8 else "",
                *(["--fallback"] if lan else [])])
        finally:
            stage.stop()
    if args.batching_sessions:
        stage = Stage("batching", args.batching_model)
        try:
            raw["cloud_batching_model"] = args.batching_model
            raw["cloud_batching"] = stage.edge("batching-worker", args, [
                "--modes", "cloud_only,speculative", "--sessions", args.batching_sessions,
                "--speculative-options", args.speculative_options,
                "--new-tokens", str(args.batching_new_tokens)])
        finally:
            stage.stop()
    return report(raw)


def mode_figures(rows: list[dict], cloud_only_rows: list[dict]) -> dict:
    """The per-mode figures over one profile's responses (`cloud_only_rows`: the same prompts in cloud_only)."""
    tokens = sum(r["tokens"] for r in rows)
    drafted = sum(r["drafted"] for r in rows)
    gammas = [g for r in rows for g in r["gammas"]]
    return {
        "tokens_per_s": round(tokens / sum(r["total_s"] for r in rows), 2),
        "ttft_ms": round(statistics.mean(r["ttft_ms"] for r in rows), 1),
        "round_trips_per_token": round(sum(r["cloud_requests"] for r in rows) / tokens, 4),
        "cloud_cpu_ms_per_token": round(sum(r["cloud_cpu_s"] for r in rows) * 1e3 / tokens, 2),
        "bytes_up_per_response": round(statistics.mean(r["bytes_up"] for r in rows)),
        "bytes_down_per_response": round(statistics.mean(r["bytes_down"] for r in rows)),
        "identical_responses": round(statistics.mean(
            float(r["token_ids"] == c["token_ids"]) for r, c in zip(rows, cloud_only_rows, strict=True)), 4),
        "agreement": round(sum(r["agreeing_tokens"] for r in rows) / tokens, 4),
        "acceptance_rate": round(sum(r["accepted_drafts"] for r in rows) / drafted, 4) if drafted else None,
        "mean_gamma": round(statistics.mean(gammas), 2) if gammas else None,
        "cloud_request_ratio": round(sum(r["cloud_requests"] for r in rows) / tokens, 4),
        "fallbacks": sum(int(r["fallback"]) for r in rows),
        "agreement_by_source": agreement_by_source(rows),
        **({"draft_splits": dict(Counter(str(r["draft_split"]) for r in rows))} if drafted else {}),
    }


def profile_report(raw: dict) -> dict:
    responses = raw["responses"]
    cloud_only = [r["modes"]["cloud_only"] for r in responses]
    modes = {}
    for mode in [m for m in MODES if m in responses[0]["modes"]]:
        answered = [r for r in responses if mode in r["modes"]]  # naive_split: the first --naive-prompts only
        modes[mode] = mode_figures([r["modes"][mode] for r in answered], [r["modes"]["cloud_only"] for r in answered])
        modes[mode]["prompts"] = len(answered)
    # the states an edge has: prompt and answer (a run without collaborative takes cloud-only's answer length)
    floor = statistics.mean((r["prompt_tokens"] + r["modes"].get("collaborative", r["modes"]["cloud_only"])["tokens"])
                            * HIDDEN_BYTES_FP16 for r in responses)
    result = {"prompts": len(responses), "hidden_floor_bytes": round(floor), "modes": modes,
              "cpu_quota": raw["cpu_quota"], "quota_mechanism": raw["quota_mechanism"],
              "operating_point": raw["operating_point"]}
    if responses[0]["int8"]:
        int8 = {mode: mode_figures([r["int8"][mode] for r in responses], cloud_only) for mode in responses[0]["int8"]}
        int8_floor = statistics.mean((r["prompt_tokens"] + r["int8"]["collaborative"]["tokens"]) * HIDDEN_BYTES_FP16
                                     for r in responses)
        result["int8_states"] = {
            "bytes_up_per_response": int8["collaborative"]["bytes_up_per_response"],
            "hidden_floor_bytes": round(int8_floor),
            "speculative_bytes_up_per_response": int8["speculative"]["bytes_up_per_response"],
            "speculative_identical_responses": int8["speculative"]["identical_responses"],
            "collaborative_agreement": int8["collaborative"]["agreement"],
            "collaborative_agreement_fp16": modes["collaborative"]["agreement"],
        }
    return result


def report(raw: dict) -> dict:
    profiles = {name: profile_report(data) for name, data in raw["profiles"].items()}
    first = profiles.get("lan") or next(iter(profiles.values()), {})  # none: a batching-only run
    fallback = next((data["fallback"] for data in raw["profiles"].values() if data["fallback"]), None)
    result = {
        "model": raw["model"], "new_tokens": None, "profiles": profiles,
        "prompts_per_profile": {name: p["prompts"] for name, p in profiles.items()},
        "hidden_floor_bytes": first.get("hidden_floor_bytes"),
        "fallback_completed": bool(fallback and fallback["completed"]), "fallback": fallback,
        "paper": PAPER,
    }
    if "int8_states" in first:
        result["int8_states"] = first["int8_states"]
    if "cloud_batching" in raw:
        result["cloud_batching"] = raw["cloud_batching"]
        result["cloud_batching_model"] = raw["cloud_batching_model"]
    result["goals"] = goals(result)
    return result


def goals(result: dict) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for name, profile in result["profiles"].items():
        modes = profile["modes"]
        speculative, collaborative = modes.get("speculative"), modes.get("collaborative")
        if speculative:
            met[f"{name}_speculative_identical_1_0"] = speculative["identical_responses"] == 1.0
            met[f"{name}_speculative_cloud_cpu_half_of_cloud_only"] = (
                speculative["cloud_cpu_ms_per_token"] <= 0.5 * modes["cloud_only"]["cloud_cpu_ms_per_token"])
        if speculative and collaborative and name == "wan":
            met["wan_speculative_round_trips_le_collaborative"] = (
                speculative["round_trips_per_token"] <= collaborative["round_trips_per_token"])
            met["wan_speculative_tokens_per_s_ge_collaborative"] = (
                speculative["tokens_per_s"] >= collaborative["tokens_per_s"])
        if collaborative:  # the collaborative goals of benchmarks.collab before speculative mode
            naive = modes.get("naive_split", {"bytes_up_per_response": 0})
            met[f"{name}_collaborative_up_within_1_25_floor"] = (
                collaborative["bytes_up_per_response"] <= 1.25 * profile["hidden_floor_bytes"])
            met[f"{name}_collaborative_up_50x_below_naive"] = (
                naive["bytes_up_per_response"] >= 50 * collaborative["bytes_up_per_response"])
            met[f"{name}_collaborative_agreement_0_90"] = collaborative["agreement"] >= 0.90
            met[f"{name}_collaborative_cloud_ratio_0_60"] = collaborative["cloud_request_ratio"] <= 0.60
    batching = result.get("cloud_batching", {}).get("cloud_only", {})
    if "sessions_8" in batching and "sessions_1" in batching:
        met["cloud_batching_8_ge_3x_1"] = batching["sessions_8"] >= 3 * batching["sessions_1"]
    int8 = result.get("int8_states")
    if int8:
        met["int8_up_le_0_6_floor"] = int8["bytes_up_per_response"] <= 0.6 * int8["hidden_floor_bytes"]
        met["int8_speculative_identical_0_95"] = int8["speculative_identical_responses"] >= 0.95
        met["int8_collaborative_agreement_within_0_005"] = (
            abs(int8["collaborative_agreement"] - int8["collaborative_agreement_fp16"]) <= 0.005)
    if result["profiles"]:
        met["fallback_completed"] = result["fallback_completed"]
    return met


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
    lines = ["| profile | mode | tokens/s | TTFT ms | round trips / token | cloud CPU ms / token | bytes up / response "
             "| identical | agreement | acceptance | mean gamma |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, profile in result["profiles"].items():
        for mode, m in profile["modes"].items():
            lines.append(f"| {name} | {mode} | {m['tokens_per_s']} | {m['ttft_ms']} | {m['round_trips_per_token']} | "
                         f"{m['cloud_cpu_ms_per_token']} | {m['bytes_up_per_response']:,} | {m['identical_responses']} | "
                         f"{m['agreement']} | {m['acceptance_rate']} | {m['mean_gamma']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collab", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--model", default=MODEL, help="model id every mode runs (edge and cloud)")
    parser.add_argument("--prompts-per-type", type=int, default=2, help="held-out prompts of each of the 5 task types")
    parser.add_argument("--prompt-split", default="held_out", choices=("held_out", "calibration"),
                        help="exit-corpus split the prompts come from: held_out (the goals) or calibration (tuning runs)")
    parser.add_argument("--profiles", default=",".join(PROFILES),
                        help='link profiles, comma-separated ("": only the cloud_batching section)')
    parser.add_argument("--naive-prompts", type=int, default=2,
                        help="naive_split on the first N prompts of a profile only (its byte goal needs no more)")
    parser.add_argument("--cpu-quota", type=float, default=0.25, help="edge CPU quota (fraction of a core); 0 = none")
    parser.add_argument("--stop-at-eos", action="store_true",
                        help="end answers at <|im_end|> (default: exactly --new-tokens tokens each, as the issue asks)")
    # The goal's agreement; the calibration target that keeps it out of fold is chosen by cross-validation
    # (it was a fixed 0.92: the goal plus a guessed margin).
    parser.add_argument("--required-agreement", type=float, default=0.90,
                        help="collaborative agreement over all tokens the operating point must keep")
    parser.add_argument("--target-agreement", type=float, default=None,
                        help="fix the calibration target instead of cross-validating it")
    parser.add_argument("--agreement-budget", default="auto",
                        help='collaborative agreement budget target: "auto" (chosen on calibration), "off" (fixed '
                             'thresholds) or a number (edge_node/collab/agreement_budget.py)')
    parser.add_argument("--deadline-s", type=float, default=20.0, help="cloud deadline per token (normal modes)")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset (sensitivity runs)")
    parser.add_argument("--skip-int8", action="store_true", help="no int8 runs on lan")
    parser.add_argument("--speculative-options", default="",
                        help="CollabConfig fields for speculative mode, e.g. gamma=4,draft_stop_unsure=false")
    parser.add_argument("--batching-sessions", default="1,4,8", help="concurrent sessions; empty = no batching section")
    parser.add_argument("--batching-model", default=BATCHING_MODEL, help="model id of the batching section")
    parser.add_argument("--batching-new-tokens", type=int, default=32, help="new tokens per batching session")
    parser.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batching-worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--port", "--cloud-pid"):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    for hidden in ("--password-file", "--out", "--link-profile", "--int8-modes", "--sessions"):
        parser.add_argument(hidden, default="", help=argparse.SUPPRESS)
    parser.add_argument("--fallback", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.profile_worker or args.batching_worker:
        from benchmarks import collab_edge

        (collab_edge.profile_worker if args.profile_worker else collab_edge.batching_worker)(args)
        return 0
    started = time.time()
    result = run(args)
    result["new_tokens"] = args.new_tokens
    result["prompt_split"] = args.prompt_split
    result["wall_s"] = round(time.time() - started, 1)
    result["host"] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    result["speculative_options"] = args.speculative_options
    if not args.json:
        print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
