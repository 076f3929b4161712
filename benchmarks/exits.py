"""Benchmark: early exits on held-out prompts with the committed heads and calibrated policy.

    .venv/bin/python -m benchmarks.exits --json

Teacher-forced along the full model's greedy continuation (64 tokens max) of every held-out
prompt. The policy and every curve point were fitted on the calibration split by
`python -m models train-exits`; nothing here is tuned on held-out. Keys: policy, exit_fraction,
agreement, per_layer, curve.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch

from models.catalog import BASE_MODEL_ID, prepare
from models.exits.calibration import evaluate
from models.exits.corpus import split
from models.exits.data import collect
from models.exits.policy import ExitPolicy, first_exit
from models.exits.training import generated, head_features
from models.paths import EXIT_HEADS_DIR, default_store_root
from models.store import ModelStore

MAX_NEW_TOKENS = 64


def per_position(policy: ExitPolicy, features: dict[int, np.ndarray], correct: dict[int, np.ndarray]) -> dict:
    """Decide every position with the policy object the edge uses (ExitPolicy.should_exit)."""
    count = next(iter(correct.values())).shape[0]
    counts = {layer: [0, 0] for layer in policy.exit_layers}
    for i in range(count):
        layer = first_exit(policy, {layer: tuple(float(v) for v in features[layer][i]) for layer in policy.exit_layers})
        if layer is not None:
            counts[layer][0] += 1
            counts[layer][1] += int(correct[layer][i])
    exited = sum(c[0] for c in counts.values())
    agreed = sum(c[1] for c in counts.values())
    return {"positions": count, "exit_fraction": exited / count, "agreement": agreed / exited if exited else 1.0,
            "per_layer": {str(layer): {"exit_fraction": n / count, "agreement": a / n if n else 1.0}
                          for layer, (n, a) in counts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    store = ModelStore(default_store_root())
    prepare(store)
    loaded = store.load(BASE_MODEL_ID)
    assert loaded.exit_heads is not None and loaded.exit_policy is not None, "run python -m models train-exits"
    exit_layers = loaded.exit_policy.exit_layers  # the exits; the heads also hold speculative drafting's
    data = collect(loaded, split("held_out"), exit_layers, MAX_NEW_TOKENS, 0, 0, store.root / ".exit-data")
    features, correct = head_features(loaded.exit_heads, generated(data), loaded)
    result = {"policy": loaded.exit_policy.to_dict(), **per_position(loaded.exit_policy, features, correct)}
    report = json.loads((EXIT_HEADS_DIR / "training_report.json").read_text())
    result["curve"] = []
    for point in report["curve_learned"]:
        measured = evaluate(ExitPolicy.from_dict(point["policy"]), features, correct)
        result["curve"].append({"target_agreement_on_calibration": point["target_agreement"],
                                "exit_fraction": round(measured.exit_fraction, 4), "agreement": round(measured.agreement, 4)})
    result["head_argmax_agreement"] = {str(layer): round(float(c.mean()), 4) for layer, c in correct.items()}
    result["any_head_right"] = round(float(np.mean(np.any(np.stack(list(correct.values())), axis=0))), 4)
    if not args.json:
        for point in result["curve"]:
            print(f"target {point['target_agreement_on_calibration']:.2f}: exit {point['exit_fraction']:.3f} "
                  f"agreement {point['agreement']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
