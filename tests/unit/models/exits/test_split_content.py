"""The exit-head splits are disjoint by content: held-out material never reaches train or calibration."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from models.exits.corpus import CorpusPrompt, corpus, normalise, split
from models.exits.corpus_train import train_only

_REPO_ROOT = Path(__file__).resolve().parents[4]
_SPLITS_DIGEST = "from tests.unit.models.exits.test_split_content import _splits_digest; print(_splits_digest())"


def _splits_digest() -> str:
    rows = [(p.task_type, p.text, p.split, p.sources) for p in corpus() + train_only()]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _fitting() -> list[CorpusPrompt]:
    """Every prompt that fits the heads or the policy."""
    return split("train") + train_only() + split("calibration")


def _mentions(text: str, source: str) -> bool:
    """Whole-word occurrence of the normalised source in the normalised text."""
    return f" {normalise(source)} " in f" {normalise(text)} "


def test_every_prompt_names_its_source_material() -> None:
    for prompt in split("held_out") + _fitting():
        assert prompt.sources, prompt.text
        assert all(_mentions(prompt.text, source) for source in prompt.sources), prompt.text


def test_held_out_material_never_appears_in_train_or_calibration() -> None:
    fitting_texts = [prompt.text for prompt in _fitting()]
    for prompt in split("held_out"):
        for source in prompt.sources:
            leaks = [text for text in fitting_texts if _mentions(text, source)]
            assert not leaks, f"held-out {source!r} appears in {leaks[:3]}"


def test_no_train_or_calibration_material_appears_in_held_out() -> None:
    held_out_texts = [prompt.text for prompt in split("held_out")]
    for prompt in _fitting():
        for source in prompt.sources:
            leaks = [text for text in held_out_texts if _mentions(text, source)]
            assert not leaks, f"{prompt.split} {source!r} appears in held-out {leaks[:3]}"


def test_train_and_calibration_share_no_source_item() -> None:
    train = {normalise(source) for prompt in split("train") + train_only() for source in prompt.sources}
    calibration = {normalise(source) for prompt in split("calibration") for source in prompt.sources}
    assert not train & calibration


def test_held_out_keeps_five_task_types_and_about_sixty_prompts() -> None:
    held_out = split("held_out")
    assert 55 <= len(held_out) <= 70
    assert len({prompt.task_type for prompt in held_out}) == 5


def test_splits_are_the_same_in_every_interpreter() -> None:
    """Python's string hash is salted per process; the splits must not be."""
    digests = set()
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", _SPLITS_DIGEST], env={**os.environ, "PYTHONHASHSEED": seed},
                                cwd=_REPO_ROOT, capture_output=True, text=True, check=True, timeout=60)
        digests.add(result.stdout.strip())
    assert digests == {_splits_digest()}
