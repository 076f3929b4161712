"""Benchmark: slice exactness on the real model, store load time, GGUF load time.

    .venv/bin/python -m benchmarks.slices --json

Keys: max_abs_diff (two slices vs the full model over prompt + 50 greedy steps, worst over several
split layers), store_load_s (prepared fp32 model, imports excluded, median of 3), gguf_load_s, and
batch4_vs_single_speedup: tokens/s of 4 sequences decoded together (one forward per step, the
decoding core's batch dimension) over the same 4 decoded one after another, same run, same threads.
Goals: max_abs_diff <= 1e-4, store_load_s <= 3, batch4_vs_single_speedup >= 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

import torch
from tqdm import tqdm

from models.catalog import BASE_MODEL_ID, prepare
from models.paths import default_store_root
from models.reference import reference_greedy
from models.store import ModelStore

SPLIT_LAYERS = (1, 10, 15, 20, 29)
BATCH_PROMPTS = ("Explain how a compass works.", "Write a haiku about autumn rain.",
                 "What is the boiling point of water?", "Name three planets and one fact about each.")
BATCH_TOKENS = 32
DECODE_STEPS = 50
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@torch.no_grad()
def split_diff(loaded, prompt_ids: list[int], reference: list[torch.Tensor], tokens: list[int], split_layer: int) -> float:
    embedding, head = loaded.embedding_slice(), loaded.head_slice()
    edge, cloud = loaded.decoder_slice(0, split_layer), loaded.decoder_slice(split_layer, loaded.num_layers)
    inputs = [prompt_ids] + [[token] for token in tokens]
    worst = 0.0
    for ids, expected in zip(inputs, reference, strict=True):
        hidden_states = edge(embedding(torch.tensor([ids])))
        actual = head(cloud(hidden_states.clone()))[0]  # clone: the cloud never shares the edge's tensor
        worst = max(worst, float((actual - expected).abs().max()))
    return worst


def batch_speedup(loaded) -> dict:
    """Tokens/s of 4 prompts in one batch over 4 sequential runs (median of 3 each, interleaved)."""
    from models.generation import generate_batch

    prompts = [loaded.encode_chat(text) for text in BATCH_PROMPTS]
    sequential, batched = [], []
    for _ in tqdm(range(3), desc="batch vs sequential", unit="run", file=sys.stderr):
        started = time.perf_counter()
        singles = [loaded.generate_greedy(ids, BATCH_TOKENS, stop_at_eos=False) for ids in prompts]
        sequential.append(time.perf_counter() - started)
        started = time.perf_counter()
        together = generate_batch(loaded, prompts, BATCH_TOKENS)
        batched.append(time.perf_counter() - started)
    tokens = len(prompts) * BATCH_TOKENS
    return {"batch4_vs_single_speedup": round(statistics.median(sequential) / statistics.median(batched), 2),
            "batch4_tokens_per_s": round(tokens / statistics.median(batched), 1),
            "single_tokens_per_s": round(tokens / statistics.median(sequential), 1),
            "batch4_identical_tokens": together == singles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    store = ModelStore(default_store_root())
    prepare(store, only_base=True)
    load_times = []
    for _ in range(3):
        started = time.perf_counter()
        loaded = store.load(BASE_MODEL_ID)
        load_times.append(time.perf_counter() - started)
    prompt_ids = loaded.encode_chat(PROMPT)
    reference, tokens = reference_greedy(loaded, prompt_ids, DECODE_STEPS)
    diffs = {layer: split_diff(loaded, prompt_ids, reference, tokens, layer)
             for layer in tqdm(SPLIT_LAYERS, desc="split layers", unit="split", file=sys.stderr)}
    from models.gguf_import import load_gguf

    started = time.perf_counter()
    load_gguf()
    gguf_load_s = time.perf_counter() - started
    result = {"max_abs_diff": max(diffs.values()), "per_split_layer": {str(k): v for k, v in diffs.items()},
              "decode_steps": DECODE_STEPS, "prompt_tokens": len(prompt_ids),
              "store_load_s": round(statistics.median(load_times), 3), "store_load_runs_s": [round(t, 3) for t in load_times],
              "gguf_load_s": round(gguf_load_s, 2), **batch_speedup(loaded)}
    result["goals"] = {"max_abs_diff": result["max_abs_diff"] <= 1e-4, "store_load_s": result["store_load_s"] <= 3,
                       "batch4_vs_single_speedup": result["batch4_vs_single_speedup"] >= 2}
    if not args.json:
        print(f"split vs full over prompt + {DECODE_STEPS} steps: {diffs}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
