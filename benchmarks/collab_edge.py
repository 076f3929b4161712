"""The edge processes of `benchmarks.collab`: every mode on held-out prompts, and concurrent sessions.

`profile_worker` runs in a process on one link profile, under a CPU quota: each prompt in every mode
(and again in the int8 modes), one answer whose cloud the parent kills mid-answer, and writes raw
per-response figures. `batching_worker` runs N sessions at once, each with its own edge id and bus
connection, against one cloud worker, and reports the aggregate tokens per second.
Cloud CPU time is read from /proc/<cloud pid>/stat around every answer (user + system).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path


def cloud_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_model_and_point(model_id: str, target_agreement: float | None, required_agreement: float):
    import torch

    torch.set_num_threads(1)
    from models.paths import default_store_root
    from models.store import ModelStore

    store = ModelStore(default_store_root())
    model = with_committed_exits(store.load(model_id))
    return model, collaborative_point(store, model, target_agreement, required_agreement)


def with_committed_exits(model):
    """The store's model, with the committed exit heads and policy if the store predates them."""
    if model.exit_heads is not None and model.exit_policy is not None:
        return model
    from models.exits.heads import ExitHeads
    from models.exits.policy import ExitPolicy
    from models.paths import EXIT_HEADS_DIR

    model.exit_heads = ExitHeads.load(EXIT_HEADS_DIR / "exit_heads.safetensors")
    model.exit_policy = ExitPolicy.from_json((EXIT_HEADS_DIR / "exit_policy.json").read_text())
    return model


def collaborative_point(store, model, target_agreement: float | None, required_agreement: float):
    """Thresholds for collaborative mode, chosen on the calibration split's generated positions.

    With no `target_agreement`, the calibration target is the one whose out-of-fold agreement meets
    `required_agreement` (cross-validated over the split's sequences). Returns (CollabPoint, rows of
    that cross-validation or None, BudgetChoice: the agreement budget's target simulated on the split)."""
    from edge_node.collab.operating_point import (
        choose_budget_target,
        choose_collab_point,
        cross_validated_collab_point,
    )
    from models.exits.corpus import split
    from models.exits.data import collect
    from models.exits.training import TrainingConfig, generated, head_features

    config = TrainingConfig()
    data = collect(model, split("calibration"), config.exit_layers, config.max_new_tokens, 0, config.seed,
                   Path(store.root) / ".exit-data")
    positions = generated(data)
    features, correct = head_features(model.exit_heads, positions, model)
    if target_agreement is not None:
        point, choice = choose_collab_point(model.exit_policy, features, correct, target_agreement), None
    else:
        point, choice = cross_validated_collab_point(model.exit_policy, features, correct,
                                                     positions.sequence_index.numpy(), required_agreement)
    return point, choice, choose_budget_target(point.policy, features, correct, required_agreement)


def held_out_prompts(per_type: int, offset: int = 0):
    return split_prompts("held_out", per_type, offset)


def split_prompts(split_name: str, per_type: int, offset: int = 0):
    """Prompts `offset` .. `offset + per_type - 1` of each task type in one exit-corpus split, in corpus order."""
    from models.exits.corpus import split

    chosen, seen = [], {}
    for prompt in split(split_name):
        count = seen.get(prompt.task_type, 0)
        seen[prompt.task_type] = count + 1
        if offset <= count < offset + per_type:
            chosen.append(prompt)
    assert len({p.task_type for p in chosen}) == 5, f"{split_name} split lacks task types"
    return chosen


def connect(args: argparse.Namespace, edge_id: str, link_profile: str = "lan"):
    from broker.client import BusClient
    from broker.config import BusConfig
    from edge_node.collab.link import CollabClient

    config = BusConfig(port=args.port, password_file=args.password_file, link_profile=link_profile).for_node(edge_id)
    bus = BusClient(edge_id, config).connect()
    return bus, CollabClient(bus, edge_id)


def mode_config(base, mode: str, options: str, **changes):
    """`base` in `mode`; speculative mode also takes `options` ("field=value,..."; ints, floats, true/false)."""
    config = dataclasses.replace(base, mode=mode, **changes)
    if mode != "speculative" or not options:
        return config
    fields = {}
    for item in options.split(","):
        name, _, text = item.partition("=")
        current = getattr(config, name.strip())
        value = text.strip().lower() in ("1", "true", "yes") if isinstance(current, bool) else type(current)(text)
        fields[name.strip()] = value
    return dataclasses.replace(config, **fields)


def summarize(model, prompt_ids: list[int], generation, cloud_cpu: float) -> dict:
    import torch

    ids = prompt_ids + list(generation.token_ids)
    with torch.no_grad():
        logits = model.full_logits(torch.tensor([ids]))[0]  # (T, V)
    full_choice = logits[len(prompt_ids) - 1 : len(ids) - 1].argmax(dim=-1).tolist()
    agrees = [int(a == b) for a, b in zip(full_choice, generation.token_ids, strict=True)]
    return {
        "token_ids": list(generation.token_ids), "tokens": len(generation.token_ids), "agreeing_tokens": sum(agrees),
        "agrees": agrees, "ttft_ms": generation.ttft_s * 1e3, "total_s": generation.total_s,
        "bytes_up": generation.bytes_up, "bytes_down": generation.bytes_down,
        "cloud_requests": generation.cloud_requests, "fallback": generation.fallback, "cloud_cpu_s": cloud_cpu,
        "drafted": generation.drafted, "accepted_drafts": generation.accepted_drafts, "gammas": list(generation.gammas),
        "decided_by": [t.decided_by for t in generation.tokens], "layers": [t.layer for t in generation.tokens],
        "draft_split": generation.draft_split,
    }


def profile_worker(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from edge_node.collab.agreement_budget import BudgetBook
    from edge_node.collab.config import CollabConfig
    from edge_node.collab.generation import generate
    from edge_node.collab.split_choice import SplitBook
    from emulation.cpu_quota import limit_cpu

    model, (point, choice, budget_choice) = load_model_and_point(args.model, args.target_agreement, args.required_agreement)
    budget_target = agreement_budget_target(args.agreement_budget, budget_choice.target)
    prompts = split_prompts(args.prompt_split, args.prompts_per_type)
    limit = limit_cpu(args.cpu_quota, f"bench-collab-{os.getpid()}") if args.cpu_quota else None
    if limit is not None:
        limit.install_on_layers(model.model.model.layers)
    bus, client = connect(args, "pi-01", args.link_profile)
    base = CollabConfig(cloud_deadline_s=args.deadline_s, exit_thresholds=tuple(r.threshold for r in point.policy.rules))
    runs = [(mode, "fp16") for mode in args.modes.split(",")]
    runs += [(mode, "int8") for mode in args.int8_modes.split(",") if mode]
    # Each run is its own edge: its budget learns over that run's answers only.
    budgets = {run: BudgetBook(budget_target) for run in runs}
    splits = {run: SplitBook() for run in runs}  # speculative_split_auto: a chooser learning over the run's answers
    responses = []
    for index, prompt in enumerate(tqdm(prompts, desc=f"{args.link_profile}: prompts (all modes each)", unit="prompt",
                                        file=sys.stderr)):
        prompt_ids = model.encode_chat(prompt.text)
        row = {"task_type": prompt.task_type, "prompt_tokens": len(prompt_ids), "modes": {}, "int8": {}}
        for mode, dtype in runs:
            if mode == "naive_split" and index >= args.naive_prompts:
                continue  # the slowest mode by far (the whole context every token): its first prompts only
            # the main runs send rows the mode's own way (fp16 collaborative, fp32 speculative); "fp16" names them
            config = mode_config(base, mode, args.speculative_options, **({"state_dtype": "int8"} if dtype == "int8" else {}))
            cpu_before = cloud_cpu_s(args.cloud_pid)
            budget = budgets[(mode, dtype)].for_answer(model.model_id, mode, config.threshold)
            generation = generate(model, prompt_ids, args.new_tokens, config, client, stop_at_eos=args.stop_at_eos,
                                  budget=budget, splits=splits[(mode, dtype)].for_answer(config, model))
            summary = summarize(model, prompt_ids, generation, cloud_cpu_s(args.cloud_pid) - cpu_before)
            row["modes" if dtype == "fp16" else "int8"][mode] = summary
            log(f"{args.link_profile} {prompt.task_type:20s} {mode:13s} {config.wire_dtype()} {len(generation.token_ids):3d} tok "
                f"{generation.total_s:6.2f} s up {generation.bytes_up:>9d} B cloud {generation.cloud_requests:3d} "
                f"cpu {summary['cloud_cpu_s']:.2f} s")
        responses.append(row)
    fallback = fallback_answer(model, client, base, prompts[0], args) if args.fallback else None
    bus.close()
    if limit is not None:
        limit.release()
    Path(args.out).write_text(json.dumps({
        "responses": responses, "fallback": fallback,
        "cpu_quota": args.cpu_quota, "quota_mechanism": limit.mechanism if limit else "none",
        "operating_point": {"target_agreement": args.target_agreement if choice is None else choice.target_agreement,
                            "required_agreement": args.required_agreement,
                            "cross_validation": None if choice is None else choice.cross_validated,
                            "exit_fraction": point.exit_fraction,
                            "agreement": point.agreement, "thresholds": [r.threshold for r in point.policy.rules],
                            "budget": budget_report(budget_target, budget_choice, budgets)},
    }))


def agreement_budget_target(setting: str, chosen: float) -> float | None:
    """--agreement-budget: "auto" = the target chosen on calibration, "off" = fixed thresholds, else a number."""
    return chosen if setting == "auto" else None if setting == "off" else float(setting)


def budget_report(target: float | None, choice, books: dict) -> dict:
    """The budget's target, how it was chosen, and where each run's budget ended."""
    ends = {}
    for (mode, dtype), book in books.items():
        for budget in book.budgets().values():
            ends[f"{mode}_{dtype}"] = {"shift": round(budget.shift, 4), "tokens": budget.tokens,
                                       "expected_agreement": round(budget.expected_agreement or 0.0, 4)}
    return {"target": target, "calibration_simulation": choice.simulated, "runs": ends}


STAGGER_S = 0.15  # cloud_batching: the staggered sessions' requests this far apart


def _concurrent_answers(model, prompts, connections, config, args, size: int, stagger_s: float = 0.0):
    """`size` sessions answering at once (or `stagger_s` apart): (tokens, latencies s, elapsed s, cloud CPU s)."""
    from edge_node.collab.generation import generate

    tokens, latencies = [0] * size, [0.0] * size

    def answer(index: int) -> None:
        time.sleep(index * stagger_s)
        asked = time.perf_counter()
        prompt_ids = model.encode_chat(prompts[index % len(prompts)].text)
        generation = generate(model, prompt_ids, args.new_tokens, config, connections[index][1], stop_at_eos=False)
        tokens[index], latencies[index] = len(generation.token_ids), time.perf_counter() - asked

    cpu_before = cloud_cpu_s(args.cloud_pid)
    started = time.perf_counter()
    threads = [threading.Thread(target=answer, args=(index,)) for index in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tokens, latencies, time.perf_counter() - started, cloud_cpu_s(args.cloud_pid) - cpu_before


def fallback_answer(model, client, base, prompt, args) -> dict:
    """One speculative answer while the parent kills the cloud after a few tokens: the edge must finish it."""
    from edge_node.collab.generation import generate

    config = dataclasses.replace(base, mode="speculative", cloud_deadline_s=2.0)
    prompt_ids = model.encode_chat(prompt.text)
    killed = []

    def kill_after(token) -> None:
        if token.position >= len(prompt_ids) + 7 and not killed:
            killed.append(token.position)
            print("KILL_CLOUD", flush=True)
            sys.stdin.readline()  # the parent answers once the cloud process is gone

    generation = generate(model, prompt_ids, args.new_tokens, config, client, on_token=kill_after,
                          stop_at_eos=args.stop_at_eos)
    by = [t.decided_by for t in generation.tokens]
    finished = len(generation.token_ids) == args.new_tokens or generation.token_ids[-1] == model.eos_token_id
    return {"mode": "speculative", "fallback": generation.fallback, "fallback_position": generation.fallback_position,
            "cloud_tokens": by.count("draft_accepted") + by.count("draft_corrected"), "local_tokens": by.count("fallback"),
            "completed": bool(generation.fallback and finished and by.count("fallback") > 0)}


def batching_worker(args: argparse.Namespace) -> None:
    """N concurrent sessions per (mode, N); aggregate tokens per second from the first start to the last end.

    For cloud_only also the largest N arriving `STAGGER_S` apart, with each answer's latency (request
    to reply) beside one lone answer's: requests that arrive while a batch runs should join it, not
    wait for it to end."""
    from edge_node.collab.config import CollabConfig

    model, (point, _, _) = load_model_and_point(args.model, args.target_agreement, args.required_agreement)
    prompts = held_out_prompts(2, offset=0)
    sizes = [int(n) for n in args.sessions.split(",")]
    connections = [connect(args, f"pi-{index + 1:02d}") for index in range(max(sizes))]
    base = CollabConfig(cloud_deadline_s=args.deadline_s, exit_thresholds=tuple(r.threshold for r in point.policy.rules))
    result: dict = {}
    for mode in args.modes.split(","):
        config = mode_config(base, mode, args.speculative_options)
        result[mode] = {}
        for size in sizes:
            tokens, latencies, elapsed_s, cpu_s = _concurrent_answers(model, prompts, connections, config, args, size)
            result[mode][f"sessions_{size}"] = round(sum(tokens) / elapsed_s, 2)
            result[mode][f"sessions_{size}_cloud_cpu_ms_per_token"] = round(cpu_s * 1e3 / max(1, sum(tokens)), 2)
            if size == 1:
                result[mode]["sessions_1_latency_s"] = round(latencies[0], 3)
            log(f"batching {mode:12s} {size} sessions: {sum(tokens)} tokens in {elapsed_s:.1f} s "
                f"({sum(tokens) / elapsed_s:.1f} tok/s)")
        if mode == "cloud_only":
            size = max(sizes)
            tokens, latencies, elapsed_s, _ = _concurrent_answers(model, prompts, connections, config, args, size,
                                                                  stagger_s=STAGGER_S)
            result[mode][f"sessions_{size}_staggered"] = round(sum(tokens) / elapsed_s, 2)
            result[mode][f"sessions_{size}_staggered_mean_latency_s"] = round(statistics.fmean(latencies), 3)
            log(f"batching {mode:12s} {size} sessions {STAGGER_S * 1e3:.0f} ms apart: mean latency "
                f"{statistics.fmean(latencies):.2f} s")
    for bus, _ in connections:
        bus.close()
    Path(args.out).write_text(json.dumps(result))
