from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.exits.heads import ExitHeads
from models.quantize import dequantize_rows, quantize_rows
from models.store import ModelStore, VariantSpec, write_model
from models.tiny import make_tiny_model


def test_int8_rows_round_trip_within_half_a_step() -> None:
    weight = torch.randn(32, 48)
    qweight, scale = quantize_rows(weight)
    assert qweight.dtype == torch.int8
    assert torch.all((dequantize_rows(qweight, scale) - weight).abs() <= scale[:, None] / 2 + 1e-6)


@pytest.mark.parametrize(("variant", "dtype"), [("fp32", "float32"), ("bf16", "bfloat16"), ("int8", "int8")])
def test_precision_variants_load_and_generate(tmp_path: Path, variant: str, dtype: str) -> None:
    model = make_tiny_model(seed=4)
    manifest = write_model(tmp_path, f"tiny-{variant}", model, VariantSpec(variant, dtype))
    loaded = ModelStore(tmp_path).load(f"tiny-{variant}", verify=True)
    assert manifest.dtype == dtype and loaded.manifest.variant == variant
    prompt_ids = loaded.encode_chat("Classify the sentiment: great food.")
    assert len(loaded.generate_greedy(prompt_ids, 5, stop_at_eos=False)) == 5
    reference = model(torch.tensor([prompt_ids])).logits
    error = float((loaded.full_logits(torch.tensor([prompt_ids])) - reference.detach()).abs().max())
    assert error < {"fp32": 1e-5, "bf16": 0.05, "int8": 0.2}[variant]


def test_smaller_storage_for_lower_precision(tmp_path: Path) -> None:
    model = make_tiny_model(seed=5)
    sizes = {dtype: write_model(tmp_path, f"tiny-{dtype}", model, VariantSpec("x", dtype)).bytes
             for dtype in ("float32", "bfloat16", "int8")}
    assert sizes["int8"] < sizes["bfloat16"] < sizes["float32"]


def test_int8_model_holds_fewer_bytes_in_memory(tmp_path: Path) -> None:
    model = make_tiny_model(seed=6, hidden=128)
    write_model(tmp_path, "f", model, VariantSpec("fp32", "float32"))
    write_model(tmp_path, "q", model, VariantSpec("int8", "int8"))
    store = ModelStore(tmp_path)
    assert store.load("q").memory_bytes() < store.load("f").memory_bytes()


@torch.no_grad()
def test_edge_variant_ends_in_its_exit_head(tmp_path: Path) -> None:
    model = make_tiny_model(seed=7)
    heads = ExitHeads(64, (1, 2))
    torch.nn.init.normal_(heads.adapter(2).proj.weight, std=0.1)
    manifest = write_model(tmp_path, "tiny-edge2", model, VariantSpec("edge", "float32", num_layers=2), heads)
    edge = ModelStore(tmp_path).load("tiny-edge2")
    assert manifest.layers == edge.num_layers == 2 and manifest.exit_layers == (1, 2)
    ids = torch.tensor([[5, 6, 7]])
    slice_hidden = edge.decoder_slice(0, 2)(edge.embedding_slice()(ids))
    expected = heads.logits(2, slice_hidden, model.model.norm, model.lm_head)
    assert torch.allclose(edge.full_logits(ids), expected, atol=1e-5)
    assert len(edge.generate_greedy([5, 6, 7], 4, stop_at_eos=False)) == 4


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_exit_heads_run_on_low_precision_variants(tmp_path: Path, dtype: str) -> None:
    model = make_tiny_model(seed=8)
    write_model(tmp_path, "low", model, VariantSpec("x", dtype), ExitHeads(64, (1, 2)))
    loaded = ModelStore(tmp_path).load("low")
    hidden_states = loaded.decoder_slice(0, 1)(loaded.embedding_slice()(torch.tensor([[5, 6]])))
    assert hidden_states.dtype == loaded.dtype
    probabilities = loaded.exit_probabilities(1, hidden_states)
    assert torch.allclose(probabilities.sum(-1), torch.ones(1, 2), atol=1e-2)
