"""The decode benchmark's pure parts: folding timing passes and the ratios the goals read (no model run)."""

from __future__ import annotations

from benchmarks.decode import TRANSFORMERS_FP32, keep_fastest, summarise


def row(decode: float, perplexity: float = 48.1, tokens: list[int] | None = None) -> dict:
    return {"decode_tok_s": decode, "prefill_tok_s": 100.0, "perplexity": perplexity, "weight_bytes_per_token": 1,
            "token_ids": tokens if tokens is not None else [1, 2, 3]}


def test_a_later_pass_counts_only_where_it_is_faster_and_every_pass_is_listed():
    first = row(20.0)
    keep_fastest(first, {"decode_tok_s": 30.0, "prefill_tok_s": 90.0})
    keep_fastest(first, {"decode_tok_s": 25.0, "prefill_tok_s": 120.0})
    assert first["decode_tok_s"] == 30.0 and first["prefill_tok_s"] == 120.0
    assert first["decode_tok_s_passes"] == [20.0, 30.0, 25.0]


def test_ratios_use_the_folded_rates_and_skip_variants_that_lose_perplexity():
    at_two = {"llamacpp": row(80.0, 48.2), "smollm2-135m": row(20.0), TRANSFORMERS_FP32: row(16.0),
              "smollm2-135m-q4": row(60.0), "smollm2-135m-int8": row(70.0, 148.0)}
    summary = summarise(at_two, {})
    assert summary["best_variant"] == "smollm2-135m-q4" and summary["best_ratio"] == 0.75
    assert summary["fp32_speedup"] == 1.25 and summary["goals"]["fp32_speedup_ge_1_2"]
    assert summary["q4_perplexity_vs_fp32"] == 1.0
