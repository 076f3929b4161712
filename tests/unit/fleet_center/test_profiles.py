from __future__ import annotations

from fleet_center.cost_model import ModelProfile
from fleet_center.profiles import default_edge_model


def profile(model_id: str, token_ms: float) -> ModelProfile:
    return ModelProfile(model_id=model_id, size_bytes=1, token_time_s=token_ms / 1e3, load_time_s=0.1, prior_quality=0.5)


PROFILES = (profile("fp32", 55.0), profile("q4", 12.0), profile("int8", 9.0), profile("bf16", 37.0))


def test_edges_start_on_the_fastest_model_within_two_percent_of_full_perplexity() -> None:
    perplexity = {"fp32": 48.10, "q4": 48.10, "int8": 103.7, "bf16": 48.2}
    assert default_edge_model(PROFILES, perplexity, "fp32") == "q4"


def test_a_faster_model_three_percent_worse_is_not_chosen() -> None:
    perplexity = {"fp32": 48.0, "q4": 48.0 * 1.03, "int8": 103.7, "bf16": 48.2}
    assert default_edge_model(PROFILES, perplexity, "fp32") == "bf16"


def test_without_a_measured_reference_the_reference_model_is_kept() -> None:
    assert default_edge_model(PROFILES, {"q4": 48.0}, "fp32") == "fp32"
