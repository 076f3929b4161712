from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from models.errors import CorruptModelError, ModelStoreError
from models.lowbit import native
from models.lowbit.formats import decode_q4, decode_q8, encode_q4, encode_q8
from models.lowbit.modules import (
    SMALL_BATCH_ROWS,
    LowBitLinear,
    float_linear,
    fuse_lowbit_linears,
    lossless_q8_linear,
)
from models.lowbit.storage import linear_weight_bytes
from models.store import ModelStore, VariantSpec, write_model
from models.tiny import make_tiny_model


def q4_1_grid(rows: int, columns: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights as the GGUF Q4_1 quantizer leaves them: per block q = 0 at the minimum, 15 at the maximum."""
    generator = torch.Generator().manual_seed(seed)
    blocks = columns // 32
    q = torch.randint(0, 16, (rows, blocks, 32), generator=generator)
    q[..., 0], q[..., 1] = 0, 15
    scale = (torch.rand(rows, blocks, 1, generator=generator) * 0.01).half().float()
    minimum = (-torch.rand(rows, blocks, 1, generator=generator) * 0.08).half().float()
    return (scale * q.float() + minimum).reshape(rows, columns), q.reshape(rows, columns)


def snap_to_grid(model: torch.nn.Module) -> torch.nn.Module:
    """Round a tiny model's weights onto the q4 grid (linears) and q8 grid (embedding), like SmolLM2's."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and parameter.shape[1] % 32 == 0 and name != "lm_head.weight":
                snapped = decode_q8(encode_q8(parameter)) if "embed" in name else decode_q4(encode_q4(parameter))
                parameter.copy_(snapped)
    return model


def test_q4_round_trips_exactly_on_the_q4_1_grid() -> None:
    weight, q = q4_1_grid(48, 96)
    encoded = encode_q4(weight)
    unpacked = torch.cat([encoded.qweight.reshape(48, 3, 16) & 0x0F, encoded.qweight.reshape(48, 3, 16) >> 4], dim=2)
    assert torch.equal(decode_q4(encoded), weight)
    assert torch.equal(unpacked.reshape(48, 96).long(), q)


def test_q8_round_trips_exactly_on_the_q8_0_grid() -> None:
    generator = torch.Generator().manual_seed(1)
    q = torch.randint(-127, 128, (40, 64), generator=generator, dtype=torch.int8)
    q[:, 0], q[:, 32] = 127, -127
    scale = (torch.rand(40, 2, 1, generator=generator) * 0.01).half().float()
    weight = (scale * q.reshape(40, 2, 32).float()).reshape(40, 64)
    assert torch.equal(decode_q8(encode_q8(weight)), weight)


def test_off_grid_weights_stay_within_half_a_step() -> None:
    weight = torch.randn(16, 64)
    encoded = encode_q4(weight)
    step = encoded.scale.float().repeat_interleave(32, dim=1)  # (N, K)
    assert torch.all((decode_q4(encoded) - weight).abs() <= step / 2 + 1e-3)


@pytest.mark.parametrize("rows", [1, 3, 8, SMALL_BATCH_ROWS + 5])
@pytest.mark.parametrize("encode", [encode_q4, encode_q8])
def test_lowbit_linear_matches_the_dequantized_fp32_linear(rows: int, encode: object) -> None:
    weight, _ = q4_1_grid(80, 192, seed=rows)
    linear = LowBitLinear(encode(weight))  # type: ignore[operator]
    x = torch.randn(2, rows, 192)
    expected = torch.nn.functional.linear(x, linear.dequantized())
    assert torch.allclose(linear(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("out", [1, 6, 83, 576])
@pytest.mark.parametrize("rows", [1, 2, 3, 8])
def test_float_linear_matches_f_linear_through_the_streaming_kernel(rows: int, out: int) -> None:
    assert native.kernels() is not None, "the kernel library must build here (gcc is installed by make setup)"
    generator = torch.Generator().manual_seed(rows * 1000 + out)
    weight, x = torch.randn(out, 576, generator=generator), torch.randn(1, rows, 576, generator=generator)
    assert torch.allclose(float_linear(x, weight), torch.nn.functional.linear(x, weight), rtol=1e-5, atol=1e-4)


def test_float_linear_gives_a_row_the_same_bits_alone_or_in_a_batch() -> None:
    generator = torch.Generator().manual_seed(7)
    weight, batch = torch.randn(1030, 1536, generator=generator), torch.randn(8, 1536, generator=generator)
    together = float_linear(batch, weight)
    for size in range(1, 8):  # every chunk shape the kernel tiles differently (4 or 2 weight rows a step)
        assert torch.equal(float_linear(batch[:size], weight), together[:size])
    assert all(torch.equal(float_linear(batch[i : i + 1], weight)[0], together[i]) for i in range(8))


def test_kernel_calls_from_many_threads_at_once_each_get_their_own_result() -> None:
    """One call at a time uses the worker pool; the others run on their own thread, none waits or mixes."""
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(2048, 576, generator=generator)  # large enough for every thread torch allows
    inputs = [torch.randn(1, 576, generator=generator) for _ in range(6)]
    expected = [float_linear(x, weight) for x in inputs]
    with ThreadPoolExecutor(max_workers=6) as executor:
        for _ in range(20):
            results = list(executor.map(lambda x: float_linear(x, weight), inputs))
            assert all(torch.equal(got, want) for got, want in zip(results, expected, strict=True))


def _kernel_in_a_forked_child(queue: multiprocessing.Queue) -> None:
    generator = torch.Generator().manual_seed(12)
    weight, x = torch.randn(2048, 576, generator=generator), torch.randn(1, 576, generator=generator)
    queue.put(float_linear(x, weight).tolist())


def test_a_forked_child_starts_its_own_kernel_workers() -> None:
    """Threads do not survive fork: a child of a process that used the pool must not wait for them."""
    generator = torch.Generator().manual_seed(12)
    weight, x = torch.randn(2048, 576, generator=generator), torch.randn(1, 576, generator=generator)
    expected = float_linear(x, weight)  # the parent's workers exist now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_kernel_in_a_forked_child, args=(queue,))
    child.start()
    result = torch.tensor(queue.get(timeout=60))
    child.join(timeout=60)
    assert child.exitcode == 0
    assert torch.equal(result, expected)


@pytest.mark.parametrize("case", ["long input", "k not a multiple of 16", "bfloat16", "autograd", "no kernels"])
def test_float_linear_leaves_what_the_kernel_does_not_cover_to_f_linear(case: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rows, k, dtype = (native.MAX_ROWS + 1, 64, torch.float32) if case == "long input" else (2, 64, torch.float32)
    if case == "k not a multiple of 16":
        k = 72
    if case == "bfloat16":
        dtype = torch.bfloat16
    weight, x = torch.randn(24, k, dtype=dtype), torch.randn(rows, k, dtype=dtype)
    if case == "autograd":
        weight.requires_grad_(True)
    if case == "no kernels":
        monkeypatch.setattr(native, "kernels", lambda: None)
    called = []
    monkeypatch.setattr(native, "f32_linear", lambda *args: called.append(args))
    y = float_linear(x, weight)
    assert not called
    assert torch.equal(y, torch.nn.functional.linear(x, weight))
    if case == "autograd":
        y.sum().backward()
        assert weight.grad is not None


def test_dequantized_q4_weights_are_exactly_the_source() -> None:
    weight, _ = q4_1_grid(64, 128, seed=3)
    assert torch.equal(LowBitLinear(encode_q4(weight)).dequantized(), weight)


def test_lowbit_linear_falls_back_without_the_c_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    weight, _ = q4_1_grid(32, 64, seed=4)
    linear = LowBitLinear(encode_q4(weight))
    x = torch.randn(1, 64)
    with_kernels = linear(x)
    monkeypatch.setattr(native, "kernels", lambda: None)
    assert torch.allclose(linear(x), with_kernels, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["q4", "int8w"])
def test_lowbit_variants_store_verify_and_load(tmp_path: Path, dtype: str) -> None:
    model = snap_to_grid(make_tiny_model(seed=8, hidden=96))
    manifest = write_model(tmp_path, f"tiny-{dtype}", model, VariantSpec(dtype, dtype))
    store = ModelStore(tmp_path)
    assert store.verify(f"tiny-{dtype}").files == manifest.files and manifest.dtype == dtype
    loaded = store.load(f"tiny-{dtype}", verify=True)
    ids = torch.tensor([loaded.encode_chat("Name the capital of France.")])
    error = float((loaded.full_logits(ids) - model(ids).logits.detach()).abs().max())
    assert error < {"q4": 1e-4, "int8w": 0.05}[dtype]
    assert len(loaded.generate_greedy(ids[0].tolist(), 4, stop_at_eos=False)) == 4


def test_q4_variant_decodes_the_same_tokens_as_its_fp32_source(tmp_path: Path) -> None:
    model = snap_to_grid(make_tiny_model(seed=9, hidden=96))
    write_model(tmp_path, "f", model, VariantSpec("fp32", "float32"))
    write_model(tmp_path, "q", model, VariantSpec("q4", "q4", max_abs_error=0.0))
    store = ModelStore(tmp_path)
    prompt = store.load("f").encode_chat("Write a haiku about rain.")
    assert store.load("q").generate_greedy(prompt, 12, False) == store.load("f").generate_greedy(prompt, 12, False)


def test_lossless_spec_refuses_weights_off_the_grid(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="not on a q4 grid"):
        write_model(tmp_path, "q", make_tiny_model(seed=10, hidden=96), VariantSpec("q4", "q4", max_abs_error=0.0))


def test_a_tampered_lowbit_file_is_named(tmp_path: Path) -> None:
    write_model(tmp_path, "q", snap_to_grid(make_tiny_model(seed=11, hidden=96)), VariantSpec("q4", "q4"))
    path = tmp_path / "q" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="model.safetensors"):
        ModelStore(tmp_path).verify("q")


def test_lower_bits_read_fewer_weight_bytes_per_token(tmp_path: Path) -> None:
    model = snap_to_grid(make_tiny_model(seed=12, hidden=96))
    for dtype in ("float32", "int8w", "q4"):
        write_model(tmp_path, dtype, model, VariantSpec(dtype, dtype))
    store = ModelStore(tmp_path)
    read = {dtype: linear_weight_bytes(store.load(dtype).model) for dtype in ("float32", "int8w", "q4")}
    assert read["q4"] < read["int8w"] < read["float32"]


def test_fused_lowbit_linears_equal_the_separate_ones() -> None:
    weights = [q4_1_grid(rows, 64, seed=rows)[0] for rows in (48, 16, 16)]
    linears = [LowBitLinear(encode_q4(weight)) for weight in weights]
    x = torch.randn(1, 3, 64)
    separate = [linear(x) for linear in linears]
    fused = fuse_lowbit_linears(linears)
    assert fused is not None and fused.out_features == 80
    for expected, part in zip(separate, fused(x).split([48, 16, 16], dim=-1), strict=True):
        assert torch.allclose(part, expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(linear(x), expected) for linear, expected in zip(linears, separate, strict=True))


def test_a_q8_grid_head_gets_a_lossless_q8_copy_and_an_off_grid_one_none() -> None:
    q = torch.randint(-127, 128, (64, 64), generator=torch.Generator().manual_seed(3), dtype=torch.int8)
    q[:, 0], q[:, 32] = 127, -127
    on_grid = (torch.full((64, 2, 1), 0.004).half().float() * q.reshape(64, 2, 32).float()).reshape(64, 64)
    copy = lossless_q8_linear(on_grid)
    assert copy is not None and torch.equal(copy.dequantized(), on_grid)
    assert lossless_q8_linear(torch.randn(64, 64)) is None
    assert lossless_q8_linear(on_grid.to(torch.bfloat16)) is None


def test_exit_checks_of_a_q8_grid_model_read_the_q8_head_and_agree_with_the_float_head(tmp_path: Path) -> None:
    model = snap_to_grid(make_tiny_model(seed=13, hidden=96))
    write_model(tmp_path, "f", model, VariantSpec("fp32", "float32"))
    loaded = ModelStore(tmp_path).load("f")
    head = loaded.decode_lm_head()
    assert isinstance(head, LowBitLinear) and head.format == "q8"
    hidden_states = torch.randn(1, 1, 96)
    assert torch.allclose(head(hidden_states), loaded.model.lm_head(hidden_states), atol=1e-4)
