"""The lean layer math against transformers' own layers, the fused weights and the preallocated KV cache."""

from __future__ import annotations

import pytest
import torch

from models.lean_layers import LayerKVCache
from models.loaded import LoadedModel
from models.store import ModelStore, VariantSpec, write_model
from models.tiny import make_tiny_model


def run_both(model: LoadedModel, ids: list[int], steps: int) -> float:
    """Worst |lean - transformers| over a prompt and `steps` fed tokens, through all layers."""
    lean, reference = model.decoder_slice(0, model.num_layers), model.decoder_slice(0, model.num_layers, True)
    embed = model.embedding_slice()
    worst = 0.0
    for feed in [ids] + [[7 + 13 * step] for step in range(steps)]:
        states = embed(torch.tensor([feed]))
        worst = max(worst, float((lean(states.clone()) - reference(states.clone())).abs().max()))
    return worst


@pytest.mark.parametrize("storage_dtype", ["float32", "bfloat16", "int8"])
def test_lean_layers_match_transformers_for_every_storage_dtype(tmp_path, storage_dtype):
    write_model(tmp_path, "m", make_tiny_model(seed=3, layers=3), VariantSpec("tiny", storage_dtype, source="test"))
    model = ModelStore(tmp_path).load("m")
    worst = run_both(model, [1, 5, 9, 200, 3000], steps=20)
    assert worst <= {"float32": 1e-4, "bfloat16": 0.05, "int8": 1e-4}[storage_dtype], worst


def test_fused_projections_share_the_models_weights(tiny_model: LoadedModel):
    attention = tiny_model.model.model.layers[0].self_attn
    before = attention.q_proj.weight.clone()
    tiny_model.decoder_slice(0, 1)
    fused = attention.q_proj._fused_with
    assert attention.q_proj.weight.data_ptr() == fused.data_ptr()  # a view into the fused tensor, no second copy
    assert attention.k_proj.weight.data_ptr() == fused.data_ptr() + before.numel() * before.element_size()
    torch.testing.assert_close(attention.q_proj.weight, before, rtol=0, atol=0)
    tiny_model.decoder_slice(0, 1)
    assert attention.q_proj._fused_with is fused  # a second slice reuses the fusion


def test_kv_cache_grows_in_place_and_rolls_back_by_length():
    cache = LayerKVCache(initial_capacity=4)
    chunks = [torch.full((1, 2, 3, 8), float(i)) for i in range(3)]
    for chunk in chunks:
        keys, values = cache.append(chunk, -chunk)
    assert cache.length == 9 and keys.shape == (1, 2, 9, 8)
    torch.testing.assert_close(keys, torch.cat(chunks, dim=2))
    cache.truncate(4)
    keys, _ = cache.append(torch.full((1, 2, 1, 8), 9.0), torch.zeros(1, 2, 1, 8))
    assert keys.shape[2] == 5 and float(keys[0, 0, 4, 0]) == 9.0 and float(keys[0, 0, 3, 0]) == 1.0
