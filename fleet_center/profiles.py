"""Model profiles for the cost model: measured figures from `python -m models profile` when present,
size-based estimates otherwise (a 540 MB fp32 SmolLM2 decodes a token in ~25 ms on this machine)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fleet_center.cost_model import ModelProfile
from models.errors import ModelStoreError
from models.store import ModelStore
from runtime.settings import FLEET_DIR

logger = logging.getLogger(__name__)

COMMITTED_PROFILES = Path(__file__).resolve().parent.parent / "models" / "profiles" / "profiles.json"
REFERENCE_BYTES = 540_000_000
REFERENCE_TOKEN_S = 0.025
REFERENCE_LOAD_S = 1.0
PRIOR_QUALITY = {"fp32": 0.5, "q4": 0.5, "int8w": 0.5, "bf16": 0.49, "int8": 0.45, "edge": 0.3, "tiny": 0.05}
LOSSLESS_PERPLEXITY_RATIO = 1.02  # a variant within 2 % of the full model's held-out perplexity counts as lossless


def default_edge_model(profiles: tuple[ModelProfile, ...], perplexity: dict[str, float], reference_model: str) -> str:
    """The fastest model (token time) whose perplexity is within 2 % of `reference_model`'s.

    Without a measured reference perplexity, the reference model itself. Pure: profiles in, id out.
    """
    reference = perplexity.get(reference_model)
    if reference is None:
        return reference_model
    lossless = [p for p in profiles
                if p.model_id in perplexity and perplexity[p.model_id] <= LOSSLESS_PERPLEXITY_RATIO * reference]
    return min(lossless, key=lambda p: p.token_time_s).model_id if lossless else reference_model


def measured_perplexity(profiles_json: Path | None) -> dict[str, float]:
    """Held-out perplexity per model id, where the profile measured it."""
    return {model_id: float(row["heldout_perplexity"]) for model_id, row in _read_measured(profiles_json).items()
            if isinstance(row.get("heldout_perplexity"), int | float)}


def profiles_path() -> Path | None:
    """This host's own profile (`python -m models profile`), else the one committed with the models."""
    for path in (FLEET_DIR / "profiles" / "profiles.json", COMMITTED_PROFILES):
        if path.exists():
            return path
    return None


def load_profiles(store: ModelStore, model_ids: tuple[str, ...], profiles_json: Path | None) -> tuple[ModelProfile, ...]:
    """A profile for every model in `model_ids` that the store has. Unknown ids are skipped with a warning."""
    measured = _read_measured(profiles_json)
    profiles = []
    for model_id in model_ids:
        try:
            manifest = store.manifest(model_id)
        except ModelStoreError as error:
            logger.warning("model %s left out of scheduling: %s", model_id, error)
            continue
        figures = measured.get(model_id, {})
        scale = manifest.bytes / REFERENCE_BYTES
        profiles.append(ModelProfile(
            model_id=model_id,
            size_bytes=int(figures.get("memory_bytes", manifest.bytes)),
            token_time_s=float(figures["token_ms"]) / 1e3 if "token_ms" in figures else REFERENCE_TOKEN_S * scale,
            load_time_s=float(figures.get("load_s", REFERENCE_LOAD_S * scale)),
            prior_quality=PRIOR_QUALITY.get(manifest.variant, 0.3),
        ))
    return tuple(profiles)


def _read_measured(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("ignoring unreadable profiles %s: %s", path, error)
        return {}
    rows = (data.get("models") or data.get("profiles") or data) if isinstance(data, dict) else data
    if isinstance(rows, dict):
        rows = list(rows.values())
    return {row["model_id"]: row for row in rows if isinstance(row, dict) and "model_id" in row}
