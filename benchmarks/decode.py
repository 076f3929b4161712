"""Benchmark: batch-1 decoding of every full-depth store variant next to llama.cpp on the package's GGUF.

    .venv/bin/python -m benchmarks.decode [--json] [--variants ID ...] [--threads 2 1] [--profile-token ID]

Each measurement runs in its own subprocess (its own peak RSS, its own torch thread count):
- llama.cpp (llama-cpp-python, the package's Q4_1 GGUF): 64 greedy tokens after a fixed chat prompt,
  EOS masked; prefill of a 256-token prompt; held-out perplexity from its logits (logits_all=True) on
  the text `python -m models profile` uses (models/profile.py `heldout_perplexity`).
- each variant through the decoding core: `decode(LocalStepper(LayerStack(model, 0, L)), ...)`, EOS
  ignored, decode tokens/s over 64 tokens from the loop's per-token latency (step 0 is the prefill; the best
  of 3 runs, as for llama.cpp),
  prefill tokens/s of the same 256-token prompt, held-out perplexity, weight bytes read per token.
Both decode the same token ids (our tokenizer is the GGUF's). Last JSON line:
`llamacpp.{decode_tok_s, prefill_tok_s, perplexity}` and `variants.<id>.{...}` at 2 threads,
`one_thread.{llamacpp, variants}`, `best_ratio` (best variant decode tok/s over llama.cpp's among
variants within 2 % of fp32's perplexity), `best_variant`, `q4_perplexity_vs_fp32`, `fp32_speedup` (the fp32
variant through the decoding core over the same weights through transformers' layers and LM head), `exit_check`
(ms and bytes of one exit check with the float32 LM head and with the exact q8 copy the core uses).
Goals: best_ratio >= 0.6, q4_perplexity_vs_fp32 <= 1.005, fp32_speedup >= 1.2.
`--profile-token ID` instead profiles decode steps of one variant with torch.profiler and prints the
split of a token's time between matmul kernels and everything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DECODE_TOKENS = 64
PREFILL_TOKENS = 256
TIMED_RUNS = 3  # decode timings: best of 3 runs of 64 tokens per runner (a shared machine's spikes filtered alike)
PROMPT = "Explain how a compass works in three sentences."
VARIANTS = ("smollm2-135m", "smollm2-135m-bf16", "smollm2-135m-int8", "smollm2-135m-q4", "smollm2-135m-int8w")
PERPLEXITY_TOLERANCE = 1.02  # variants within 2 % of fp32's perplexity count for best_ratio
GOALS = {"best_ratio": 0.6, "q4_perplexity_vs_fp32": 1.005}


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _store_tokenizer_model() -> Any:
    from models.catalog import BASE_MODEL_ID
    from models.paths import default_store_root
    from models.tokenizer import load_tokenizer

    return load_tokenizer(default_store_root() / BASE_MODEL_ID)


def prefill_prompt(tokenizer: Any) -> list[int]:
    """A 256-token chat-free prompt: held-out text, repeated as needed (the same ids for every runner)."""
    from models.exits.corpus import split

    ids: list[int] = []
    for prompt in split("held_out"):
        ids += tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= PREFILL_TOKENS:
            break
    while len(ids) < PREFILL_TOKENS:
        ids += ids
    return ids[:PREFILL_TOKENS]


def greedy_without_eos(eos_token_id: int) -> Any:
    """A LocalStepper picker: greedy with EOS masked, as llama.cpp is run (always 64 tokens)."""

    def pick(logits: Any) -> list[int]:
        masked = logits.clone()
        masked[:, eos_token_id] = float("-inf")
        return [int(token) for token in masked.argmax(dim=-1)]

    return pick


def measure_variant(model_id: str, threads: int, with_perplexity: bool,
                    transformers_layers: bool = False) -> dict[str, Any]:
    import torch

    from models.decode_loop import LocalStepper, decode
    from models.decoding import LayerStack
    from models.paths import default_store_root
    from models.profile import heldout_perplexity
    from models.store import ModelStore

    torch.set_num_threads(threads)
    loaded = ModelStore(default_store_root()).load(model_id)
    prompt_ids = loaded.encode_chat(PROMPT)
    pick = greedy_without_eos(loaded.eos_token_id)
    def stack() -> LayerStack:  # transformers_layers: the same weights through transformers' own layer modules
        return LayerStack(loaded, 0, loaded.num_layers, transformers_layers=transformers_layers)

    decode(LocalStepper(stack(), pick), [prompt_ids], 4)  # warm-up
    # step 0 is the prompt; steps 1..64 are one-token forwards, as llama.cpp's 64 evals; the fastest run counts
    decode_s = float("inf")
    for _ in range(TIMED_RUNS):
        answer = decode(LocalStepper(stack(), pick), [prompt_ids], DECODE_TOKENS + 1)[0]
        decode_s = min(decode_s, sum(token.latency_ms for token in answer.tokens[1:]) / 1e3)
    long_prompt = prefill_prompt(loaded.tokenizer)
    prefill = decode(LocalStepper(stack()), [long_prompt], 1)[0]
    result = {"decode_tok_s": round(DECODE_TOKENS / decode_s, 2),
              "prefill_tok_s": round(PREFILL_TOKENS / (prefill.tokens[0].latency_ms / 1e3), 1),
              "weight_bytes_per_token": weight_bytes_per_token(loaded, transformers_layers),
              "token_ids": list(answer.token_ids[:DECODE_TOKENS])}
    if with_perplexity:
        result["perplexity"] = round(heldout_perplexity(loaded), 3)
    result["peak_rss_bytes"] = _peak_rss_bytes()
    return result


def weight_bytes_per_token(loaded: Any, transformers_layers: bool) -> int:
    """Linear and norm weight bytes one token reads, with the LM head the decoding core multiplies by."""
    from models.lowbit.storage import linear_weight_bytes

    total = linear_weight_bytes(loaded.model)
    head = loaded.decode_lm_head()
    if transformers_layers or head is loaded.model.lm_head:
        return total
    return total - linear_weight_bytes(loaded.model.lm_head) + linear_weight_bytes(head)


def measure_exit_check(threads: int, repeats: int = 50) -> dict[str, Any]:
    """ms per exit check (adapter, norm, LM head, softmax, features) at layer 20, float32 head vs the q8 copy."""
    import torch

    from models.catalog import BASE_MODEL_ID
    from models.exits.heads import exit_features
    from models.lowbit.storage import linear_weight_bytes
    from models.paths import default_store_root
    from models.slices import HeadSlice
    from models.store import ModelStore

    torch.set_num_threads(threads)
    loaded = ModelStore(default_store_root()).load(BASE_MODEL_ID)
    hidden_states = torch.randn(1, 1, loaded.hidden_size, generator=torch.Generator().manual_seed(0))
    adapter, norm = loaded.exit_heads.adapter(20), loaded.model.model.norm
    result: dict[str, Any] = {}
    for name, lm_head in (("float_head", loaded.model.lm_head), ("cheap_head", loaded.decode_lm_head())):
        head = HeadSlice(norm, lm_head, adapter)
        def check(head: HeadSlice = head) -> None:
            exit_features(torch.softmax(head(hidden_states)[0], dim=-1), None, None)
        for _ in range(5):
            check()
        started = time.perf_counter()
        for _ in range(repeats):
            check()
        result[f"{name}_ms"] = round(1e3 * (time.perf_counter() - started) / repeats, 3)
        result[f"{name}_bytes"] = linear_weight_bytes(lm_head)
    result["speedup"] = round(result["float_head_ms"] / result["cheap_head_ms"], 2)
    return result


class LlamaCppScorer:
    """The parts of a LoadedModel `heldout_perplexity` uses, with logits from llama.cpp."""

    def __init__(self, llama: Any, tokenizer: Any) -> None:
        from models.tokenizer import encode_chat

        self.llama, self.tokenizer, self._encode_chat = llama, tokenizer, encode_chat
        self.eos_token_id = int(tokenizer.eos_token_id)

    def encode_chat(self, user_message: str) -> list[int]:
        return self._encode_chat(self.tokenizer, user_message, None)

    def full_logits(self, input_ids: Any) -> Any:
        import torch

        ids = input_ids[0].tolist()
        self.llama.reset()
        self.llama.eval(ids)
        return torch.from_numpy(self.llama.scores[: len(ids)].copy()).unsqueeze(0)  # (1, T, V)


def open_llamacpp(threads: int, logits_all: bool = False) -> Any:
    """llama-cpp-python's Llama on the package's GGUF, without extra buffer types.

    With them, llama.cpp 0.3.36 picks its AMX buffer on this CPU and crashes (SIGSEGV in
    ggml_backend_amx_mul_mat); without them Q4_1 runs its ordinary AVX-512 CPU kernels.
    """
    import llama_cpp.llama_cpp as bindings
    from llama_cpp import Llama

    from models.paths import gguf_path

    defaults = bindings.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = without_extra_buffers
    try:
        return Llama(model_path=str(gguf_path()), n_ctx=1024, n_batch=512, n_threads=threads,
                     n_threads_batch=threads, logits_all=logits_all, verbose=False)
    finally:
        bindings.llama_model_default_params = defaults


def measure_llamacpp(threads: int, with_perplexity: bool) -> dict[str, Any]:
    import numpy as np
    from gguf import GGUFReader

    from models.paths import gguf_path
    from models.profile import heldout_perplexity
    from models.tokenizer import encode_chat

    tokenizer = _store_tokenizer_model()
    eos = int(tokenizer.eos_token_id)
    llama = open_llamacpp(threads)
    prompt_ids = encode_chat(tokenizer, PROMPT, None)
    token_ids, latencies, best_s = [], [], float("inf")
    for run in range(1 + TIMED_RUNS):  # the first run warms up; the fastest timed run counts
        llama.reset()
        llama.eval(prompt_ids)
        token_ids, latencies = [], []
        for _ in range(DECODE_TOKENS):
            logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),)).copy()
            logits[eos] = -np.inf  # EOS masked: always 64 tokens
            token = int(logits.argmax())
            started = time.perf_counter()
            llama.eval([token])
            latencies.append(time.perf_counter() - started)
            token_ids.append(token)
        if run > 0:
            best_s = min(best_s, sum(latencies))
        logger.debug("llama.cpp run %d done", run)
    long_prompt = prefill_prompt(tokenizer)
    llama.reset()
    started = time.perf_counter()
    llama.eval(long_prompt)
    prefill_s = time.perf_counter() - started
    weight_bytes = sum(int(t.n_bytes) for t in GGUFReader(str(gguf_path())).tensors)
    result: dict[str, Any] = {"decode_tok_s": round(DECODE_TOKENS / best_s, 2),
                              "prefill_tok_s": round(PREFILL_TOKENS / prefill_s, 1),
                              "weight_bytes_per_token": weight_bytes, "token_ids": token_ids}
    if with_perplexity:
        scorer = open_llamacpp(threads, logits_all=True)
        result["perplexity"] = round(heldout_perplexity(LlamaCppScorer(scorer, tokenizer)), 3)
    result["peak_rss_bytes"] = _peak_rss_bytes()
    return result


def profile_token(model_id: str, threads: int, steps: int = 16) -> dict[str, Any]:
    """ms per token in matmul kernels (aten linear/mm/addmm, quantized linear, our C kernels) vs the rest."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from models.decode_loop import LocalStepper
    from models.decoding import LayerStack
    from models.lowbit import native
    from models.paths import default_store_root
    from models.store import ModelStore

    traced_kernels = ("q4_linear", "q8_linear", "f32_linear")
    for name in traced_kernels:  # make the ctypes kernels visible to the profiler
        original = getattr(native, name)

        def traced(*args: Any, _original: Any = original, _name: str = name) -> Any:
            with record_function(f"lowbit::{_name}"):
                return _original(*args)

        setattr(native, name, traced)
    torch.set_num_threads(threads)
    loaded = ModelStore(default_store_root()).load(model_id)
    stepper = LocalStepper(LayerStack(loaded, 0, loaded.num_layers))
    feed = [loaded.encode_chat(PROMPT)]
    for _ in range(4):
        feed = [[decision.token_id for decision in row] for row in stepper.step(feed)]
    started = time.perf_counter()
    for _ in range(steps):
        feed = [[decision.token_id for decision in row] for row in stepper.step(feed)]
    wall_ms = (time.perf_counter() - started) * 1e3 / steps
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            feed = [[decision.token_id for decision in row] for row in stepper.step(feed)]
        profiled_ms = (time.perf_counter() - started) * 1e3 / steps
    lowbit_names = tuple(f"lowbit::{name}" for name in traced_kernels)
    kernel_names = ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "quantized::linear_dynamic",
                    *lowbit_names)
    events = profiler.key_averages()
    kernel_us = sum(e.cpu_time_total for e in events if e.key in ("aten::linear", "quantized::linear_dynamic",
                                                                    *lowbit_names))
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"model_id": model_id, "threads": threads, "wall_ms_per_token": round(wall_ms, 2),
            "profiled_ms_per_token": round(profiled_ms, 2), "kernel_ms_per_token": round(kernel_us / 1e3 / steps, 2),
            "kernel_share": round(kernel_us / 1e3 / steps / profiled_ms, 3),  # of the profiled steps' wall time
            "top_self_ms_per_token": {e.key: round(e.self_cpu_time_total / 1e3 / steps, 3) for e in top},
            "kernel_ops": [e.key for e in events if e.key in kernel_names]}


TRANSFORMERS_FP32 = "transformers-fp32"  # the fp32 variant through transformers' layers (what fp32_speedup divides by)


def worker_main() -> None:
    """Subprocess entry: argv = [kind, model_id or '-', threads, with_perplexity]; prints one JSON line."""
    logging.basicConfig(level=logging.WARNING)
    kind, model_id, threads, with_perplexity = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    if kind == "llamacpp":
        result = measure_llamacpp(threads, with_perplexity)
    elif kind == "profile":
        result = profile_token(model_id, threads)
    elif kind == "exit_check":
        result = measure_exit_check(threads)
    elif kind == "transformers":
        result = measure_variant(model_id, threads, with_perplexity=False, transformers_layers=True)
    else:
        result = measure_variant(model_id, threads, with_perplexity)
    print(json.dumps(result))


def run_worker(kind: str, model_id: str, threads: int, with_perplexity: bool) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess. Raises RuntimeError with its stderr if it fails."""
    code = "from benchmarks.decode import worker_main; worker_main()"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code, kind, model_id, str(threads), "1" if with_perplexity else "0"],
                            capture_output=True, text=True, env=env, timeout=1800, check=False, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} {model_id} at {threads} threads failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_runner(name: str, threads: int, with_perplexity: bool) -> dict[str, Any]:
    """One runner of the table (llama.cpp, a store variant, or fp32 through transformers' layers) in a subprocess."""
    if name == TRANSFORMERS_FP32:
        return run_worker("transformers", "smollm2-135m", threads, with_perplexity)
    return run_worker("llamacpp" if name == "llamacpp" else "variant", name, threads, with_perplexity)


def keep_fastest(row: dict[str, Any], again: dict[str, Any]) -> None:
    """Fold a later timing pass into `row`: the faster decode and prefill count; every pass's decode is listed."""
    row.setdefault("decode_tok_s_passes", [row["decode_tok_s"]]).append(again["decode_tok_s"])
    row["decode_tok_s"] = max(row["decode_tok_s"], again["decode_tok_s"])
    row["prefill_tok_s"] = max(row["prefill_tok_s"], again["prefill_tok_s"])


def summarise(at_two: dict[str, dict[str, Any]], at_one: dict[str, dict[str, Any]]) -> dict[str, Any]:
    llamacpp = at_two.pop("llamacpp")
    transformers_fp32 = at_two.pop(TRANSFORMERS_FP32, None)
    fp32 = at_two["smollm2-135m"]["perplexity"]
    for name, row in at_one.items():  # perplexity does not depend on threads: measured once
        row["perplexity"] = (llamacpp if name == "llamacpp" else at_two[name])["perplexity"]
    eligible = {name: row for name, row in at_two.items() if row["perplexity"] <= fp32 * PERPLEXITY_TOLERANCE}
    best = max(eligible, key=lambda name: eligible[name]["decode_tok_s"])
    q4 = at_two.get("smollm2-135m-q4")
    fp32_tokens = at_two["smollm2-135m"].pop("token_ids")
    for row in (*at_two.values(), *at_one.values(), llamacpp):
        tokens = row.pop("token_ids", None)
        if tokens is not None:
            same = [a == b for a, b in zip(tokens, fp32_tokens, strict=True)]
            row["tokens_as_fp32"] = same.index(False) if False in same else DECODE_TOKENS  # greedy prefix shared
    at_two["smollm2-135m"]["tokens_as_fp32"] = DECODE_TOKENS
    summary = {"threads": 2, "llamacpp": llamacpp, "variants": at_two,
               "one_thread": {"llamacpp": at_one.pop("llamacpp", None), "variants": at_one},
               "best_variant": best, "best_ratio": round(eligible[best]["decode_tok_s"] / llamacpp["decode_tok_s"], 3),
               "q4_perplexity_vs_fp32": None if q4 is None else round(q4["perplexity"] / fp32, 4),
               "fp32_speedup": None if transformers_fp32 is None else round(
                   at_two["smollm2-135m"]["decode_tok_s"] / transformers_fp32["decode_tok_s"], 3),
               "transformers_fp32": None if transformers_fp32 is None else {
                   k: v for k, v in transformers_fp32.items() if k != "token_ids"}}
    summary["goals"] = {"best_ratio_ge_0_6": summary["best_ratio"] >= GOALS["best_ratio"],
                        "q4_perplexity_vs_fp32_le_1_005": summary["q4_perplexity_vs_fp32"] is not None
                        and summary["q4_perplexity_vs_fp32"] <= GOALS["q4_perplexity_vs_fp32"],
                        "fp32_speedup_ge_1_2": summary["fp32_speedup"] is not None and summary["fp32_speedup"] >= 1.2}
    summary["host"] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line last")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--profile-token", metavar="ID", help="profile decode steps of one variant instead")
    parser.add_argument("--passes", type=int, default=2,
                        help="timing passes over every runner at the first thread count; each runner's fastest counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.profile_token:
        for threads in args.threads:
            print(json.dumps(run_worker("profile", args.profile_token, threads, False)))
        return
    assert "smollm2-135m" in args.variants, "fp32 is the yardstick: keep smollm2-135m among --variants"
    results: dict[int, dict[str, dict[str, Any]]] = {threads: {} for threads in args.threads}
    jobs = [(threads, name) for threads in args.threads for name in ("llamacpp", *args.variants)]
    jobs.insert(2, (args.threads[0], TRANSFORMERS_FP32))  # the fp32 variant through transformers' layers, next to it
    for threads, name in tqdm(jobs, desc="decode benchmark", unit="run", file=sys.stderr):
        row = run_runner(name, threads, with_perplexity=threads == args.threads[0] and name != TRANSFORMERS_FP32)
        results[threads][name] = row
        logger.info("%s at %d threads: %s", name, threads, {k: v for k, v in row.items() if k != "token_ids"})
    first, *rest = args.threads
    # Later passes time every runner at the first thread count again, minutes after the first: this VM's
    # second core comes and goes (llama.cpp at 2 threads measured 82 then 35 tok/s ten minutes apart), and
    # a slow spell must not decide a ratio by falling on one runner only.
    again = [(threads, name) for threads, name in jobs if threads == first]
    for index in range(1, args.passes):
        for threads, name in tqdm(again, desc=f"decode timing pass {index + 1}", unit="run", file=sys.stderr):
            keep_fastest(results[threads][name], run_runner(name, threads, with_perplexity=False))
    summary = summarise(results[first], results[rest[0]] if rest else {})
    summary["exit_check"] = run_worker("exit_check", "-", first, False)
    for goal, met in summary["goals"].items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
