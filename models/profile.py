"""`python -m models profile`: measure every catalog variant and plot the figures operators use.

Each variant is measured in its own subprocess so peak memory is its own: bytes on disk, load
time, peak RSS, per-token decode time and perplexity on the held-out prompts (human-written text
no variant generated). Writes profiles.json and three PNG plots against model size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DECODE_TOKENS = 32  # greedy tokens timed per variant
PROFILE_PROMPT = "Explain how a compass works in three sentences."


def _rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def heldout_perplexity(loaded: Any) -> float:
    """exp(mean NLL) of the held-out prompts' user text, conditioned on the chat prefix."""
    import torch

    from models.exits.corpus import split

    total_nll, total_tokens = 0.0, 0
    for prompt in split("held_out"):
        empty_chat = loaded.encode_chat("")
        end_of_user_turn = len(empty_chat) - 1 - empty_chat[::-1].index(loaded.eos_token_id)
        prefix = empty_chat[:end_of_user_turn]  # system turn + "<|im_start|>user\n"
        text_ids = loaded.tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prefix + text_ids])  # (1, T)
        logits = loaded.full_logits(ids)[0, len(prefix) - 1:-1]  # (n, V) predicting text_ids
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(text_ids), reduction="sum")
        total_nll, total_tokens = total_nll + float(nll), total_tokens + len(text_ids)
    return math.exp(total_nll / total_tokens)


def measure(store_root: str, model_id: str) -> dict[str, Any]:
    """Measure one variant in this process (call in a fresh subprocess for a clean peak RSS)."""
    import torch

    from models.decode_loop import LocalStepper, decode
    from models.decoding import LayerStack
    from models.store import ModelStore

    torch.set_num_threads(2)
    baseline_rss = _rss_bytes()
    started = time.perf_counter()
    loaded = ModelStore(store_root).load(model_id)
    load_s = time.perf_counter() - started
    prompt_ids = loaded.encode_chat(PROFILE_PROMPT)
    # The first step is the prompt (prefill); each later step one token: the loop times both.
    answer = decode(LocalStepper(LayerStack(loaded, 0, loaded.num_layers)), [prompt_ids], DECODE_TOKENS + 1)[0]
    prefill_s = answer.tokens[0].latency_ms / 1e3
    token_times = [token.latency_ms / 1e3 for token in answer.tokens[1:]]
    perplexity = heldout_perplexity(loaded)
    manifest = loaded.manifest
    return {"model_id": model_id, "variant": manifest.variant, "dtype": manifest.dtype, "layers": manifest.layers,
            "parameters": manifest.parameters, "bytes": manifest.bytes, "memory_bytes": loaded.memory_bytes(),
            "peak_rss_bytes": _rss_bytes(), "peak_rss_over_imports_bytes": _rss_bytes() - baseline_rss,
            "load_s": round(load_s, 3), "prefill_s": round(prefill_s, 3),
            "token_ms": round(1000 * statistics.median(token_times[2:]), 2), "heldout_perplexity": round(perplexity, 3)}


def worker_main() -> None:
    """Subprocess entry: argv = [store_root, model_id]; prints one JSON line."""
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))  # noqa: T201 - subprocess protocol


def profile_one(store_root: Path, model_id: str) -> dict[str, Any]:
    """Run `measure` in a subprocess. Raises RuntimeError with its stderr if it fails."""
    code = "from models.profile import worker_main; worker_main()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code, str(store_root), model_id], capture_output=True, text=True,
                            env=env, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"profiling {model_id} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def plot_profiles(profiles: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """perplexity / load time / token time vs model size (MB on disk), one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, label, name in (("heldout_perplexity", "held-out perplexity", "perplexity_vs_size.png"),
                             ("load_s", "load time (s)", "load_time_vs_size.png"),
                             ("token_ms", "token process time (ms/token)", "token_time_vs_size.png")):
        figure, axis = plt.subplots(figsize=(6, 4))
        for p in profiles:
            axis.scatter(p["bytes"] / 1e6, p[key])
            axis.annotate(p["model_id"].removeprefix("smollm2-135m-") or "fp32", (p["bytes"] / 1e6, p[key]),
                          textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.set_xlabel("model size on disk (MB)")
        axis.set_ylabel(label)
        axis.set_title(f"{label} vs model size")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=110)
        plt.close(figure)
        paths.append(out_dir / name)
    return paths


def profile_catalog(store: Any, out_dir: Path, model_ids: list[str] | None = None) -> dict[str, Any]:
    """Profile catalog variants present in `store`; write profiles.json + plots into `out_dir`."""
    from models.catalog import CATALOG

    ids = model_ids or [entry.model_id for entry in CATALOG if store.has(entry.model_id)]
    profiles = []
    for model_id in ids:
        logger.info("profiling %s", model_id)
        profiles.append(profile_one(Path(store.root), model_id))
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "threads": 2},
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": profiles}
    (out_dir / "profiles.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_profiles(profiles, out_dir)
    return result
