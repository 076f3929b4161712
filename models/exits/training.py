"""`python -m models train-exits`: self-distil exit heads from the full model, then calibrate the policy.

Heads are trained on the train split (plus train-only prompts) with full-vocabulary KL(teacher || head)
in bfloat16 matmuls; the calibration split picks the epoch to keep and fits the exit policy (logistic
scores + thresholds); the report figures come from the held-out split, which no step sees.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.exits.calibration import OperatingPoint, calibrate, cross_validated_target, evaluate
from models.exits.corpus import CorpusPrompt, split
from models.exits.corpus_train import train_only
from models.exits.corpus_vocabulary import vocabulary_prompts, vocabulary_words, words_of
from models.exits.data import ExitData, collect
from models.exits.heads import EXIT_HEADS_NAME, ExitHeads, exit_features
from models.exits.policy import ExitPolicy, ExitRule
from models.loaded import LoadedModel

logger = logging.getLogger(__name__)

CURVE_TARGETS = (0.80, 0.83, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98)


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    exit_layers: tuple[int, ...] = (10, 15, 20)  # decoder layers before each head
    max_new_tokens: int = 64  # continuation length per prompt
    sampled_per_train_prompt: int = 4  # extra sampled continuations per train prompt (data multiplier)
    train_only_prompts: bool = True  # add models/exits/corpus_train.py's prompts to the train data
    sampled_per_train_only_prompt: int = 3  # sampled continuations per train-only prompt
    vocabulary_prompts: int = 600  # train prompts on single vocabulary words (models/exits/corpus_vocabulary.py)
    # Exits are judged on generated positions; prompt positions are easier (0.77-0.84 head agreement at
    # layers 10-20 against 0.34-0.47 on generated ones) and only this share of them is trained on.
    prompt_position_share: float = 0.25
    epochs: int = 3  # the epoch with the best calibration agreement is kept (the committed heads: 3)
    batch_size: int = 256  # positions per optimiser step
    learning_rate: float = 5e-3  # AdamW peak, cosine decay to 10 %
    weight_decay: float = 0.1  # AdamW decoupled decay: pulls W towards zero (the plain final head)
    required_agreement: float = 0.90  # exits must agree with the full model this often on unseen text
    # The calibration target the policy is fitted at; None: the one that meets required_agreement
    # out of fold on the calibration split (calibration.cross_validated_target; it was a fixed 0.92).
    target_agreement: float | None = None
    target_candidates: tuple[float, ...] = (0.88, 0.89, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95)
    seed: int = 0


def rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama RMSNorm in float32 (weight frozen)."""
    x = hidden_states.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def distill_heads(data: ExitData, norm_weight: torch.Tensor, eps: float, lm_head_weight: torch.Tensor,
                  config: TrainingConfig, validation: ExitData | None = None) -> tuple[ExitHeads, list[dict[str, float]]]:
    """Train one residual adapter per exit layer on `data`; returns heads and per-epoch history.

    With `validation` (the calibration split's generated positions) each epoch also records the heads'
    argmax agreement there, and the heads of the epoch with the highest sum over exits are returned:
    early stopping chosen on calibration, never on held-out.
    """
    hidden_size = lm_head_weight.shape[1]
    heads = ExitHeads(hidden_size, config.exit_layers).train()
    embedding = lm_head_weight.detach().to(torch.bfloat16)  # (V, C) frozen
    optimizer = torch.optim.AdamW(heads.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (summed agreement, epoch, weights)
    step = 0
    for epoch in range(config.epochs):
        started, loss_sum, agree = time.perf_counter(), 0.0, dict.fromkeys(config.exit_layers, 0)
        batches = torch.randperm(len(data), generator=generator).split(config.batch_size)
        for batch in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", file=sys.stderr):
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total_steps)))
            with torch.no_grad():
                teacher = F.log_softmax((data.final[batch] @ embedding.T).float(), dim=-1)  # (B, V)
            loss = torch.zeros(())
            for layer in config.exit_layers:
                adapted = heads.adapter(layer)(data.hidden[layer][batch].float())  # (B, C)
                logits = (rms_norm(adapted, norm_weight, eps).to(torch.bfloat16) @ embedding.T).float()  # (B, V)
                student = F.log_softmax(logits, dim=-1)
                loss = loss + F.kl_div(student, teacher, log_target=True, reduction="batchmean")
                agree[layer] += int((logits.argmax(-1) == data.teacher_tokens[batch]).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
            step += 1
        record = {"epoch": epoch + 1, "kl_sum_per_position": loss_sum / len(data),
                  "seconds": time.perf_counter() - started}
        record.update({f"train_agreement_{layer}": agree[layer] / len(data) for layer in config.exit_layers})
        if validation is not None:
            record.update({f"calibration_agreement_{layer}": value for layer, value in
                           argmax_agreement(heads, validation, norm_weight, eps, embedding).items()})
            score = sum(record[f"calibration_agreement_{layer}"] for layer in config.exit_layers)
            if best is None or score > best[0]:
                best = (score, epoch + 1, copy.deepcopy(heads.state_dict()))
        history.append(record)
        logger.info("epoch %d: %s", epoch + 1, record)
    if best is not None:
        heads.load_state_dict(best[2])
        logger.info("kept epoch %d (best summed calibration agreement %.4f)", best[1], best[0])
    return heads.eval(), history


@torch.no_grad()
def argmax_agreement(heads: ExitHeads, data: ExitData, norm_weight: torch.Tensor, eps: float,
                     embedding: torch.Tensor, chunk: int = 1024) -> dict[int, float]:
    """Per exit layer: share of positions whose head argmax (bf16 LM head, as in training) is the teacher's."""
    was_training = heads.training
    heads.eval()
    agree = dict.fromkeys(heads.exit_layers, 0)
    for start in range(0, len(data), chunk):
        teacher = data.teacher_tokens[start:start + chunk]
        for layer in heads.exit_layers:
            adapted = heads.adapter(layer)(data.hidden[layer][start:start + chunk].float())  # (n, C)
            logits = rms_norm(adapted, norm_weight, eps).to(torch.bfloat16) @ embedding.T  # (n, V)
            agree[layer] += int((logits.argmax(-1) == teacher).sum())
    heads.train(was_training)
    return {layer: count / max(len(data), 1) for layer, count in agree.items()}


@torch.no_grad()
def head_features(heads: ExitHeads, data: ExitData, loaded: LoadedModel,
                  chunk: int = 512) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per exit layer: features (N, F) and correct (N,) = head argmax equals the full model's token.

    Exit layers are the heads' layers `data` recorded states for: drafting heads (`add_draft_heads`) take
    no part in the exit policy."""
    layers = tuple(layer for layer in heads.exit_layers if layer in data.hidden)
    features: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    correct: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(data), chunk):
        previous_tokens, previous_top = None, None
        teacher = data.teacher_tokens[start:start + chunk]
        for layer in layers:
            hidden_states = data.hidden[layer][start:start + chunk].float()[None]  # (1, n, C)
            # the exit check the edge runs (models/loaded.py: q8 LM head when exact)
            head = loaded.exit_head(layer, heads)
            probabilities = torch.softmax(head(hidden_states)[0], dim=-1)  # (n, V)
            feats, tokens, top = exit_features(probabilities, previous_tokens, previous_top,
                                               data.copy_candidates[start:start + chunk])
            features[layer].append(feats.numpy())
            correct[layer].append((tokens == teacher).numpy())
            previous_tokens, previous_top = tokens, top
    return ({layer: np.concatenate(parts) for layer, parts in features.items()},
            {layer: np.concatenate(parts) for layer, parts in correct.items()})


def thin_prompt_positions(data: ExitData, share: float, seed: int) -> ExitData:
    """All generated positions and a seeded random `share` of the prompt positions."""
    keep = torch.rand(len(data), generator=torch.Generator().manual_seed(seed)) < share
    return data.subset(data.is_generated | keep)


def point_to_dict(point: OperatingPoint) -> dict[str, Any]:
    return {"exit_fraction": round(point.exit_fraction, 4), "agreement": round(point.agreement, 4),
            "per_layer": {str(layer): {"exit_fraction": round(f, 4), "agreement": round(a, 4)}
                          for layer, (f, a) in point.per_layer.items()}}


def curve(calibration: tuple[dict, dict], held_out: tuple[dict, dict], learned: bool) -> list[dict[str, Any]]:
    """Operating points: policy fitted on calibration for each target, measured on held-out."""
    points = []
    for target in CURVE_TARGETS:
        policy = calibrate(*calibration, target_agreement=target, learned=learned)
        point = evaluate(policy, *held_out)
        points.append({"target_agreement": target, **point_to_dict(point), "policy": policy.to_dict()})
    return points


def train_exits(store: Any, out_dir: Path, config: TrainingConfig | None = None, model_id: str | None = None,
                prompts: dict[str, list[CorpusPrompt]] | None = None) -> dict[str, Any]:
    """Collect data, train heads, calibrate, evaluate on held-out; write heads, policy, report to `out_dir`.

    Defaults: the stored fp32 SmolLM2 and the project corpus. Raises ModelStoreError if the model is absent.
    """
    from models.catalog import BASE_MODEL_ID

    config = config or TrainingConfig()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    prompts = prompts or {name: split(name) for name in ("train", "calibration", "held_out")}
    loaded, datasets, heads, history, seconds = distilled(store, model_id or BASE_MODEL_ID, prompts, config)
    training = {"prompts": {**{name: len(prompts[name]) for name in datasets},
                            "train_only": len(train_only()) if config.train_only_prompts else 0,
                            "vocabulary": len(vocabulary_train_prompts(loaded, prompts, config))},
                "positions": {name: len(data) for name, data in datasets.items()},
                "generated_positions": {name: int(data.is_generated.sum()) for name, data in datasets.items()},
                "seconds": seconds,
                "history": history,
                "best_epoch": max(history, key=lambda h: sum(h.get(f"calibration_agreement_{layer}", 0.0)
                                                             for layer in config.exit_layers))["epoch"]}
    return calibrate_and_write(loaded, heads, datasets["calibration"], datasets["held_out"], config, training, out_dir)


def kept_draft_rules(out_dir: Path, heads: ExitHeads) -> tuple[ExitRule, ...]:
    """The draft rules of the policy in `out_dir` whose heads `heads` still has (a recalibration keeps them)."""
    path = out_dir / "exit_policy.json"
    if not path.is_file():
        return ()
    return tuple(rule for rule in ExitPolicy.from_json(path.read_text()).draft_rules if rule.exit_layer in heads.exit_layers)


def add_draft_heads(store: Any, out_dir: Path, layers: tuple[int, ...], config: TrainingConfig | None = None,
                    model_id: str | None = None, prompts: dict[str, list[CorpusPrompt]] | None = None) -> dict[str, Any]:
    """Train heads at `layers` the same way and add them to the heads in `out_dir`; the exit rules stay.

    These heads are speculative decoding's drafting heads at a deeper split (edge_node/collab/config.py
    `speculative_split_layer`): their rules are fitted as their own cascade on the calibration split and
    kept apart (`ExitPolicy.draft_rules`), so the exits, standalone answers and the collaborative operating
    point do not change. Writes the merged heads, the policy with its draft rules and
    `draft_heads_report.json` (per-epoch history, held-out argmax agreement and draft-rule figures).
    """
    from models.catalog import BASE_MODEL_ID

    config = replace(config or TrainingConfig(), exit_layers=tuple(sorted(layers)))
    existing = ExitHeads.load(out_dir / EXIT_HEADS_NAME)
    assert not set(layers) & set(existing.exit_layers), f"heads at {existing.exit_layers} exist already"
    prompts = prompts or {name: split(name) for name in ("train", "calibration", "held_out")}
    loaded, datasets, new, history, seconds = distilled(store, model_id or BASE_MODEL_ID, prompts, config)
    # The draft heads' own cascade of rules (a sure draft head drafts on), fitted like the exits'
    calibration_data, held_out = generated(datasets["calibration"]), generated(datasets["held_out"])
    drafts, target, _ = fitted_policy(head_features(new, calibration_data, loaded), calibration_data, config)
    norm = loaded.model.model.norm
    agreement = argmax_agreement(new, held_out, norm.weight.detach(), norm.variance_epsilon,
                                 loaded.model.lm_head.weight.detach().to(torch.bfloat16))
    policy = ExitPolicy.from_json((out_dir / "exit_policy.json").read_text())
    existing.merged(new).save(out_dir / EXIT_HEADS_NAME)
    (out_dir / "exit_policy.json").write_text(ExitPolicy(policy.rules, drafts.rules).to_json())
    report = {"layers": list(config.exit_layers), "history": history, "draft_target_agreement": target,
              "draft_rules_held_out": point_to_dict(evaluate(drafts, *head_features(new, held_out, loaded))),
              "seconds": seconds,
              "head_agreement_held_out": {str(layer): round(value, 4) for layer, value in agreement.items()}}
    (out_dir / "draft_heads_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("draft heads %s added to %s: held-out argmax agreement %s", list(layers), out_dir,
                report["head_agreement_held_out"])
    return report


def distilled(store: Any, model_id: str, prompts: dict[str, list[CorpusPrompt]], config: TrainingConfig):
    """Load the model, collect its data and distil heads at `config.exit_layers`:
    (model, datasets, heads, per-epoch history, seconds of data collection and of training)."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    loaded = store.load(model_id)
    datasets = training_data(loaded, prompts, config, Path(store.root) / ".exit-data")
    data_seconds = time.perf_counter() - started
    heads, history = distill_with_calibration(loaded, datasets, config)
    seconds = {"data": round(data_seconds, 1), "training": round(time.perf_counter() - started - data_seconds, 1)}
    return loaded, datasets, heads, history, seconds


def training_data(loaded: LoadedModel, prompts: dict[str, list[CorpusPrompt]], config: TrainingConfig,
                  cache_dir: Path) -> dict[str, ExitData]:
    """Train (corpus train split + train-only + vocabulary prompts, prompt positions thinned), calibration, held-out."""
    datasets = {name: collect(loaded, prompts[name], config.exit_layers, config.max_new_tokens,
                              config.sampled_per_train_prompt if name == "train" else 0, config.seed, cache_dir)
                for name in ("train", "calibration", "held_out")}
    if config.train_only_prompts:
        # Collected apart from the corpus train split so each part keeps its own cache entry.
        extra = collect(loaded, train_only(), config.exit_layers, config.max_new_tokens,
                        config.sampled_per_train_only_prompt, config.seed, cache_dir)
        datasets["train"] = ExitData.concat([datasets["train"], extra])
    vocabulary = vocabulary_train_prompts(loaded, prompts, config)
    if vocabulary:  # greedy continuations only: the point is more subjects, not more samples of each
        datasets["train"] = ExitData.concat([datasets["train"], collect(
            loaded, vocabulary, config.exit_layers, config.max_new_tokens, 0, config.seed, cache_dir)])
    datasets["train"] = thin_prompt_positions(datasets["train"], config.prompt_position_share, config.seed)
    return datasets


def distill_with_calibration(loaded: LoadedModel, datasets: dict[str, ExitData],
                             config: TrainingConfig) -> tuple[ExitHeads, list[dict[str, float]]]:
    """`distill_heads` on the train data, keeping the epoch best on the calibration split's generated positions."""
    norm = loaded.model.model.norm
    return distill_heads(datasets["train"], norm.weight.detach(), norm.variance_epsilon,
                         loaded.model.lm_head.weight, config, validation=generated(datasets["calibration"]))


def vocabulary_train_prompts(loaded: LoadedModel, prompts: dict[str, list[CorpusPrompt]],
                             config: TrainingConfig) -> list[CorpusPrompt]:
    """Single-word train prompts; no word of a calibration or held-out prompt is used."""
    if config.vocabulary_prompts <= 0:
        return []
    tokens = loaded.tokenizer.convert_ids_to_tokens(list(range(len(loaded.tokenizer))))
    words = vocabulary_words(tokens, words_of(prompts["calibration"] + prompts["held_out"]))
    return vocabulary_prompts(words, config.vocabulary_prompts, config.seed)


def recalibrate(store: Any, out_dir: Path, config: TrainingConfig | None = None, model_id: str | None = None,
                prompts: dict[str, list[CorpusPrompt]] | None = None) -> dict[str, Any]:
    """Fit the policy again for the heads in `out_dir` (and its report's training figures), no training."""
    from models.catalog import BASE_MODEL_ID

    config = config or TrainingConfig()
    loaded = store.load(model_id or BASE_MODEL_ID)
    heads = ExitHeads.load(out_dir / EXIT_HEADS_NAME)
    previous = json.loads((out_dir / "training_report.json").read_text())
    training = {key: previous[key] for key in ("prompts", "positions", "generated_positions", "seconds", "history",
                                                "best_epoch") if key in previous}
    # the heads' training settings are the previous run's; only the calibration settings are today's
    calibration_settings = ("required_agreement", "target_agreement", "target_candidates")
    training["config"] = {**previous.get("config", {}), **{k: v for k, v in asdict(config).items() if k in calibration_settings}}
    cache_dir = Path(store.root) / ".exit-data"
    prompts = prompts or {name: split(name) for name in ("calibration", "held_out")}
    data = {name: collect(loaded, prompts[name], config.exit_layers, config.max_new_tokens, 0, config.seed, cache_dir)
            for name in ("calibration", "held_out")}
    return calibrate_and_write(loaded, heads, data["calibration"], data["held_out"], config, training, out_dir)


def generated(data: ExitData) -> ExitData:
    """The positions that predict a generated token (exits are judged there, not on the prompt)."""
    return data.subset(data.is_generated)


def fitted_policy(calibration: tuple[dict, dict], calibration_data: ExitData, config: TrainingConfig):
    """(policy, its target agreement, the cross-validated choice or None): rules fitted on the calibration
    split's head features at `config.target_agreement`, or at the target cross-validation picks."""
    choice = None
    target = config.target_agreement
    if target is None:
        choice = cross_validated_target(*calibration, calibration_data.sequence_index.numpy(),
                                        config.required_agreement, config.target_candidates)
        target = choice.target_agreement
    return calibrate(*calibration, target_agreement=target, learned=True), target, choice


def calibrate_and_write(loaded: LoadedModel, heads: ExitHeads, calibration_split: ExitData, held_out_split: ExitData,
                        config: TrainingConfig, training: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Policy from the calibration split, figures from held-out; heads, policy and report written to `out_dir`."""
    calibration_data = generated(calibration_split)
    calibration = head_features(heads, calibration_data, loaded)
    held_out = head_features(heads, generated(held_out_split), loaded)
    policy, target, choice = fitted_policy(calibration, calibration_data, config)
    report = {
        "config": asdict(config),
        **training,
        "target_agreement": target,
        "target_cross_validation": None if choice is None else choice.cross_validated,
        "head_agreement_held_out": {str(layer): round(float(c.mean()), 4) for layer, c in held_out[1].items()},
        "policy": policy.to_dict(),
        "calibration": point_to_dict(evaluate(policy, *calibration)),
        "held_out": point_to_dict(evaluate(policy, *held_out)),
        "curve_learned": curve(calibration, held_out, learned=True),
        "curve_top_probability": curve(calibration, held_out, learned=False),
    }
    report["summary"] = {"exit_fraction": report["held_out"]["exit_fraction"],
                         "agreement": report["held_out"]["agreement"], "target_agreement": target,
                         "training_s": training.get("seconds", {}).get("training")}
    out_dir.mkdir(parents=True, exist_ok=True)
    heads.save(out_dir / EXIT_HEADS_NAME)
    (out_dir / "exit_policy.json").write_text(ExitPolicy(policy.rules, kept_draft_rules(out_dir, heads)).to_json())
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    from models.exits.report import write_report

    write_report(report, out_dir)
    logger.info("exit heads written to %s: %s", out_dir, report["summary"])
    return report
