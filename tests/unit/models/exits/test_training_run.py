"""`train_exits` then `recalibrate` end to end on a tiny random model (what `python -m models train-exits` runs)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from models.exits.corpus import CorpusPrompt, split
from models.exits.heads import EXIT_HEADS_NAME, ExitHeads
from models.exits.policy import ExitPolicy
from models.exits.training import TrainingConfig, add_draft_heads, recalibrate, train_exits
from models.store import ModelStore
from models.tiny import write_tiny_model


def prompts_of(name: str, count: int) -> list[CorpusPrompt]:
    return split(name)[:count]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train-store")
    write_tiny_model(root, "tiny-train", seed=3, layers=4, exit_layers=(1, 2))
    store = ModelStore(root)
    prompts = {"train": prompts_of("train", 12), "calibration": prompts_of("calibration", 10),
               "held_out": prompts_of("held_out", 6)}
    config = TrainingConfig(exit_layers=(1, 2), max_new_tokens=8, sampled_per_train_prompt=1, train_only_prompts=False,
                            vocabulary_prompts=4, epochs=1, batch_size=64, target_candidates=(0.5, 0.7, 0.9))
    out = root / "heads"
    report = train_exits(store, out, config, model_id="tiny-train", prompts=prompts)
    return store, out, config, prompts, report


def test_training_writes_heads_policy_and_a_cross_validated_target(trained):
    _, out, config, _, report = trained
    assert ExitHeads.load(out / EXIT_HEADS_NAME).exit_layers == (1, 2)
    policy = ExitPolicy.from_json((out / "exit_policy.json").read_text())
    assert policy.exit_layers == (1, 2)
    rows = report["target_cross_validation"]
    assert [row["target_agreement"] for row in rows] == list(config.target_candidates)
    assert report["target_agreement"] in config.target_candidates
    assert json.loads((out / "training_report.json").read_text())["summary"]["target_agreement"] == report["target_agreement"]
    assert "cross-validation" in (out / "training_report.md").read_text()
    assert report["prompts"]["vocabulary"] == 4  # single-word train prompts went into the data


def test_recalibration_keeps_the_heads_and_the_training_figures(trained):
    store, out, config, prompts, report = trained
    before = ExitHeads.load(out / EXIT_HEADS_NAME).state_dict()
    again = recalibrate(store, out, dataclasses.replace(config, target_agreement=0.7, epochs=99), model_id="tiny-train",
                        prompts=prompts)
    assert again["target_agreement"] == 0.7 and again["target_cross_validation"] is None
    assert again["history"] == report["history"] and again["positions"] == report["positions"]
    assert again["config"]["epochs"] == config.epochs and again["config"]["target_agreement"] == 0.7
    after = ExitHeads.load(out / EXIT_HEADS_NAME).state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert ExitPolicy.from_json((out / "exit_policy.json").read_text()).exit_layers == (1, 2)


def test_draft_heads_join_the_heads_and_leave_the_policy_and_the_other_heads(trained, tmp_path):
    store, out, config, prompts, _ = trained
    heads_dir = tmp_path / "heads"
    shutil.copytree(out, heads_dir)
    before = ExitHeads.load(heads_dir / EXIT_HEADS_NAME).state_dict()
    policy_text = (heads_dir / "exit_policy.json").read_text()
    report = add_draft_heads(store, heads_dir, (3,), config, model_id="tiny-train", prompts=prompts)
    merged = ExitHeads.load(heads_dir / EXIT_HEADS_NAME)
    assert merged.exit_layers == (1, 2, 3)
    after = merged.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)  # the exit heads are untouched
    assert after["adapters.3.proj.weight"].abs().sum() > 0  # the new head was trained (it starts at zero)
    policy = ExitPolicy.from_json((heads_dir / "exit_policy.json").read_text())
    assert policy.rules == ExitPolicy.from_json(policy_text).rules  # the exits' rules are untouched
    assert [rule.exit_layer for rule in policy.draft_rules] == [3]  # the new head's rule is kept apart
    assert report["draft_target_agreement"] in config.target_candidates
    assert set(report["head_agreement_held_out"]) == {"3"} and 0.0 <= report["head_agreement_held_out"]["3"] <= 1.0
    assert json.loads((heads_dir / "draft_heads_report.json").read_text())["layers"] == [3]
    # recalibrating the exit policy afterwards ignores the drafting head and keeps it in the heads file
    again = recalibrate(store, heads_dir, config, model_id="tiny-train", prompts=prompts)
    recalibrated = ExitPolicy.from_json((heads_dir / "exit_policy.json").read_text())
    assert recalibrated.exit_layers == (1, 2) and recalibrated.draft_rules == policy.draft_rules
    assert set(again["head_agreement_held_out"]) == {"1", "2"}
    assert ExitHeads.load(heads_dir / EXIT_HEADS_NAME).exit_layers == (1, 2, 3)
    with pytest.raises(AssertionError, match="exist already"):
        add_draft_heads(store, heads_dir, (3,), config, model_id="tiny-train", prompts=prompts)
