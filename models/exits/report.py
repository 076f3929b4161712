"""Human-readable training report and the exit curve plot for trained exit heads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def plot_curve(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label in (("curve_learned", "learned exit score"), ("curve_top_probability", "top probability")):
        points = report[key]
        axis.plot([p["agreement"] for p in points], [p["exit_fraction"] for p in points], marker="o", label=label)
    axis.axvline(0.90, color="grey", linestyle="--", linewidth=0.8)
    axis.axhline(0.25, color="grey", linestyle=":", linewidth=0.8)
    axis.set_xlabel("agreement with full model (held-out)")
    axis.set_ylabel("exit fraction at layer <= 20 (held-out)")
    axis.set_title("SmolLM2-135M exit heads 10/15/20: policy fitted on calibration")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def curve_table(report: dict[str, Any]) -> str:
    lines = ["| policy | target (calibration) | exit fraction (held-out) | agreement (held-out) |",
             "|---|---|---|---|"]
    for key, label in (("curve_learned", "learned"), ("curve_top_probability", "top prob")):
        for p in report[key]:
            lines.append(f"| {label} | {p['target_agreement']:.2f} | {p['exit_fraction']:.3f} | {p['agreement']:.3f} |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Write training_report.md and exit_curve.png next to the heads."""
    plot_curve(report, out_dir / "exit_curve.png")
    layers = [k.removeprefix("train_agreement_") for k in report["history"][0] if k.startswith("train_agreement")]
    history = "\n".join(f"| {h['epoch']} | {h['kl_sum_per_position']:.3f} | "
                        + " | ".join(f"{h[f'train_agreement_{layer}']:.3f}" for layer in layers) + " | "
                        + " | ".join(f"{h.get(f'calibration_agreement_{layer}', float('nan')):.3f}" for layer in layers)
                        + f" | {h['seconds']:.0f} |" for h in report["history"])
    per_layer = "\n".join(f"| {layer} | {v['exit_fraction']:.3f} | {v['agreement']:.3f} | "
                          f"{report['head_agreement_held_out'][layer]:.3f} |"
                          for layer, v in report["held_out"]["per_layer"].items())
    text = f"""# Exit heads: training report

Reproduce with `python -m models train-exits` (needs `python -m models prepare --base-only`).
Prompts: {report.get('prompts', '-')} (train data = train split + train-only prompts; splits share no source material).
Positions: {report['positions']} (generated: {report['generated_positions']}).
Time: data {report['seconds']['data']} s, training {report['seconds']['training']} s.

## Training (train data, KL summed over exits)
Agreement = head argmax equals the full model's token: on the train data during the epoch, and on the
calibration split's generated positions after it. Kept: epoch {report.get('best_epoch', len(report['history']))}
(highest calibration agreement summed over exits; held-out plays no part).

| epoch | KL | {' | '.join(f'train@{layer}' for layer in layers)} | {' | '.join(f'calib@{layer}' for layer in layers)} | s |
|---|---|{'---|' * (2 * len(layers))}---|
{history}

## Policy (fitted on calibration at agreement >= {report.get('target_agreement', report['config']['target_agreement'])}), measured on held-out
{_target_choice(report)}
exit fraction {report['held_out']['exit_fraction']:.3f}, agreement {report['held_out']['agreement']:.3f}
(calibration: {report['calibration']['exit_fraction']:.3f} / {report['calibration']['agreement']:.3f}).

| exit layer | exit fraction | agreement of exits | head argmax agreement (all positions) |
|---|---|---|---|
{per_layer}

## Curve (held-out)
![exit curve](exit_curve.png)

{curve_table(report)}
"""
    (out_dir / "training_report.md").write_text(text)


def _target_choice(report: dict) -> str:
    """How the calibration target was chosen: cross-validated table, or fixed in the config."""
    rows = report.get("target_cross_validation")
    if not rows:
        return "Target fixed in the training config."
    required = report["config"]["required_agreement"]
    lines = ["Target chosen by 5-fold cross-validation over the calibration split's sequences: the one with the most",
             f"out-of-fold exits whose pooled out-of-fold agreement is >= {required} (held-out plays no part).", "",
             "| calibration target | out-of-fold exit fraction | out-of-fold agreement |", "|---|---|---|"]
    lines += [f"| {r['target_agreement']:.2f} | {r['exit_fraction']:.3f} | {r['agreement']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"

