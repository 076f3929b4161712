"""Where int8 hidden-state rows change the cloud's token, and whether re-sending near-ties exactly would help.

`.venv/bin/python -m benchmarks.int8_near_ties --json`: for the collab benchmark's held-out prompts
(`--prompts-per-type` each), the full model's greedy answer (`--new-tokens`, EOS not special, as the
benchmark runs), the layer-k rows of prompt + answer as the edge uploads them (fp16), and the same rows
through the int8 codec (`broker/messages/hidden_rows.py`). The cloud's layers [k, L) run over each;
per answer position: does the argmax differ (a flip), the int8 run's top-2 logit margin, and how much
the margin moved. Then the refinement a verifier could ask for: rows whose int8 margin is below d
replaced by their fp16 rows (the rest stay int8), flips counted again, for several d. Model only, no
broker: it isolates the codec from everything else the collab benchmark measures.

`--outliers 4 8 16` adds `codecs`: the same rows through the int8 codec with that many fp16 outliers per
row (the wire keeps INT8_OUTLIERS), with bytes per row, flips and the largest logit change per position
(percentiles). `--split calibration` takes the exit corpus's calibration prompts instead of the
held-out ones the collab benchmark answers, so a codec can be chosen on prompts the benchmark never sees.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from benchmarks.collab_edge import split_prompts, with_committed_exits
from broker.messages.hidden_rows import decode_rows, encode_rows
from broker.messages.inference import INT8_OUTLIERS, hidden_bytes
from models.decoding import LayerStack
from models.paths import default_store_root
from models.store import ModelStore

MODEL = "smollm2-135m"
MARGINS = (0.05, 0.1, 0.2, 0.3, 0.5)


def cloud_logits(model, split: int, rows: np.ndarray) -> torch.Tensor:
    stack = LayerStack(model, split, model.num_layers)
    states = stack.run(torch.from_numpy(rows).to(model.dtype)[None]).hidden_states
    return stack.logits(states)[0]  # (T, V)


def int8_round_trip(rows: np.ndarray, outliers: int = INT8_OUTLIERS) -> np.ndarray:
    """(n, C) rows as the cloud sees them after the int8 codec with `outliers` fp16 values kept apart per row."""
    half = rows.astype(np.float16)
    return decode_rows(encode_rows(half, "int8", outliers), len(half), half.shape[1], "int8", outliers)


@torch.no_grad()
def measure_answer(model, prompt_ids: list[int], new_tokens: int, split: int) -> dict:
    """One answer: its fp16 and int8 rows, and per answer position the int8 run's margin, how far the margin
    moved from the fp16 run's, whether the argmax flipped, and the fp16 run's argmax."""
    ids = prompt_ids + model.generate_greedy(prompt_ids, new_tokens, stop_at_eos=False)
    rows = LayerStack(model, 0, split).run_tokens([ids]).hidden_states[0].float().numpy()
    fp16 = rows.astype(np.float16).astype(np.float32)
    int8 = int8_round_trip(rows)
    span = slice(len(prompt_ids) - 1, len(ids) - 1)  # the rows that predict the answer's tokens
    exact, coded = cloud_logits(model, split, fp16)[span], cloud_logits(model, split, int8)[span]
    top, exact_top = coded.topk(2, dim=-1).values, exact.topk(2, dim=-1).values
    margin = (top[:, 0] - top[:, 1]).numpy()
    return {"fp16": fp16, "int8": int8, "span": span, "margin": margin, "exact_logits": exact,
            "moved": np.abs(margin - (exact_top[:, 0] - exact_top[:, 1]).numpy()),
            "flips": (coded.argmax(-1) != exact.argmax(-1)).numpy(), "exact_argmax": exact.argmax(-1).numpy()}


@torch.no_grad()
def refined_flips(model, split: int, answer: dict, margin_below: float) -> tuple[int, int]:
    """(flips left, rows re-sent) when the rows whose int8 margin is below `margin_below` travel as fp16."""
    rows = answer["int8"].copy()
    near = np.flatnonzero(answer["margin"] < margin_below) + answer["span"].start
    rows[near] = answer["fp16"][near]
    refined = cloud_logits(model, split, rows)[answer["span"]].argmax(-1).numpy()
    return int((refined != answer["exact_argmax"]).sum()), len(near)


@torch.no_grad()
def codec_errors(model, split: int, answers: list[dict], outliers: int) -> dict:
    """The int8 codec with `outliers` fp16 values per row over every answer's rows: flips, logit changes, bytes."""
    flips, changes = 0, []
    for answer in answers:
        coded = cloud_logits(model, split, int8_round_trip(answer["fp16"], outliers))[answer["span"]]
        exact = answer["exact_logits"]
        flips += int((coded.argmax(-1) != exact.argmax(-1)).sum())
        changes.append((coded - exact).abs().amax(dim=-1).numpy())
    row_bytes = hidden_bytes(1, answers[0]["fp16"].shape[1], "int8", outliers)
    return {"outliers": outliers, "bytes_per_row": row_bytes,
            "vs_fp16": round(row_bytes / hidden_bytes(1, answers[0]["fp16"].shape[1], "fp16"), 3), "flips": flips,
            "max_logit_change_percentiles_50_90_max": [round(float(v), 4) for v in np.percentile(
                np.concatenate(changes), [50, 90, 100])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--prompts-per-type", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--split-layer", type=int, default=20)
    parser.add_argument("--split", choices=("held_out", "calibration"), default="held_out",
                        help="exit-corpus split the prompts come from")
    parser.add_argument("--outliers", type=int, nargs="*", default=[],
                        help=f"also measure the codec with these outlier counts (the wire's: {INT8_OUTLIERS})")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = with_committed_exits(ModelStore(default_store_root()).load(MODEL))
    prompts = split_prompts(args.split, args.prompts_per_type)
    answers = [measure_answer(model, model.encode_chat(prompt.text), args.new_tokens, args.split_layer)
               for prompt in prompts]
    positions = sum(len(a["margin"]) for a in answers)
    result = {
        "split": args.split, "positions": positions, "answers": len(answers),
        "flips": int(sum(a["flips"].sum() for a in answers)),
        "answers_with_a_flip": [p.task_type for p, a in zip(prompts, answers, strict=True) if a["flips"].any()],
        "margins_at_flips": [round(float(m), 4) for a in answers for m in a["margin"][a["flips"]]],
        "margin_moved_percentiles_50_90_99_max": [round(float(v), 4) for v in np.percentile(
            np.concatenate([a["moved"] for a in answers]), [50, 90, 99, 100])],
        "refine": [],
    }
    for threshold in MARGINS:
        counts = [refined_flips(model, args.split_layer, answer, threshold) for answer in answers]
        result["refine"].append({"margin_below": threshold, "flips": sum(flips for flips, _ in counts),
                                 "rows_resent_share": round(sum(sent for _, sent in counts) / positions, 4)})
    result["codecs"] = [codec_errors(model, args.split_layer, answers, count) for count in args.outliers]
    if not args.json:
        for row in result["codecs"]:
            print(f"{row['outliers']} outliers: {row['bytes_per_row']} B a row ({row['vs_fp16']} x fp16), "
                  f"{row['flips']} flips, largest logit change p50/p90/max {row['max_logit_change_percentiles_50_90_max']}")
        for row in result["refine"]:
            print(f"re-send rows with margin < {row['margin_below']}: {row['rows_resent_share']:.1%} of rows, "
                  f"{row['flips']} flips left")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
