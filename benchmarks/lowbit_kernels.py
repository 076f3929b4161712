"""Kernel study: µs per call and effective GB/s of every low-bit CPU matmul candidate on SmolLM2's shapes.

    .venv/bin/python -m benchmarks.lowbit_kernels [--threads 1 2] [--batches 1 4 8] [--json]

Weights are the real model's (30 layers rotated per shape, so a call does not find its weights in
L2; the 105 MB L3 still holds a q4 shape's 30 copies), batch rows M of float32 activations.
Candidates: fp32 / bf16 F.linear, fbgemm dynamic int8 (torch.ao quantized dynamic Linear, per-channel),
torch._weight_int8pack_mm, aten._weight_int4pack_mm_for_cpu (group 32), torch.compile of
dequantize + matmul (q4 blocks), llama.cpp's ggml mul_mat on the GGUF's own Q4_1 / Q8_0 tensors
(through ctypes into llama-cpp-python's libggml), and models/lowbit's C kernels (q4 and q8 blocks).
GB/s = bytes of the weight format read per call / time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from models.lowbit.formats import BLOCK, Q4Weight, encode_q4, encode_q8, nbytes
from models.lowbit.modules import LowBitLinear
from models.paths import default_store_root, gguf_path

logger = logging.getLogger(__name__)

MIN_CALLS = 20
TARGET_S = 0.25  # measuring time per (kernel, shape, batch, threads)
LAYERS = 30
# shape name -> (store weight names per layer, GGUF tensor names per layer); several names = concatenated rows
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "q/o 576x576": (("self_attn.q_proj",), ("attn_q",)),
    "k/v 192x576": (("self_attn.k_proj",), ("attn_k",)),
    "qkv fused 960x576": (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("attn_q", "attn_k", "attn_v")),
    "gate/up 1536x576": (("mlp.gate_proj",), ("ffn_gate",)),
    "gate+up fused 3072x576": (("mlp.gate_proj", "mlp.up_proj"), ("ffn_gate", "ffn_up")),
    "down 576x1536": (("mlp.down_proj",), ("ffn_down",)),
    "head 49152x576": (("embed",), ("token_embd",)),
}
Kernel = Callable[[torch.Tensor, int], torch.Tensor]  # (x (M, K), copy index) -> (M, N)


def store_weights(model: torch.nn.Module, names: tuple[str, ...]) -> list[torch.Tensor]:
    if names == ("embed",):
        return [model.model.embed_tokens.weight.detach()]
    layers = model.model.layers
    return [torch.cat([layers[i].get_submodule(name).weight.detach() for name in names]) for i in range(LAYERS)]


# ---- llama.cpp's ggml through ctypes -------------------------------------------------------------------
class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class Ggml:
    """The few ggml calls a mul_mat graph needs, from llama-cpp-python's bundled libraries."""

    def __init__(self) -> None:
        import llama_cpp

        lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
        self.base = ctypes.CDLL(str(lib_dir / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        self.cpu = ctypes.CDLL(str(lib_dir / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
        pointer = ctypes.c_void_p
        self.base.ggml_init.argtypes, self.base.ggml_init.restype = [_InitParams], pointer
        self.base.ggml_new_tensor_2d.argtypes = [pointer, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        self.base.ggml_new_tensor_2d.restype = pointer
        self.base.ggml_mul_mat.argtypes, self.base.ggml_mul_mat.restype = [pointer, pointer, pointer], pointer
        self.base.ggml_new_graph.argtypes, self.base.ggml_new_graph.restype = [pointer], pointer
        self.base.ggml_build_forward_expand.argtypes = [pointer, pointer]
        self.base.ggml_get_data.argtypes, self.base.ggml_get_data.restype = [pointer], pointer
        self.base.ggml_nbytes.argtypes, self.base.ggml_nbytes.restype = [pointer], ctypes.c_size_t
        self.cpu.ggml_graph_compute_with_ctx.argtypes = [pointer, pointer, ctypes.c_int]
        self.cpu.ggml_cpu_init.argtypes = []
        self.cpu.ggml_cpu_init()

    def matmul(self, raw: bytes, ggml_type: int, out: int, k: int, rows: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """A callable y = x W^T with W (out, k) given as ggml blocks; its graph is built once."""
        context = self.base.ggml_init(_InitParams(len(raw) + rows * k * 8 + out * rows * 4 + 64 * 2**20, None, False))
        weight = self.base.ggml_new_tensor_2d(context, ggml_type, k, out)
        assert self.base.ggml_nbytes(weight) == len(raw), "ggml block size disagrees with the GGUF tensor"
        ctypes.memmove(self.base.ggml_get_data(weight), raw, len(raw))
        x = self.base.ggml_new_tensor_2d(context, 0, k, rows)  # GGML_TYPE_F32
        result = self.base.ggml_mul_mat(context, weight, x)
        graph = self.base.ggml_new_graph(context)
        self.base.ggml_build_forward_expand(graph, result)
        x_data, y_data = self.base.ggml_get_data(x), self.base.ggml_get_data(result)

        def run(activations: torch.Tensor, threads: int) -> torch.Tensor:
            ctypes.memmove(x_data, activations.data_ptr(), rows * k * 4)
            self.cpu.ggml_graph_compute_with_ctx(context, graph, threads)
            y = torch.empty(rows, out)
            ctypes.memmove(y.data_ptr(), y_data, rows * out * 4)
            return y

        return run


def gguf_raw(reader: object, names: tuple[str, ...], layer: int | None) -> tuple[bytes, int]:
    tensors = {t.name: t for t in reader.tensors}  # type: ignore[attr-defined]
    parts = [tensors[f"blk.{layer}.{name}.weight" if layer is not None else f"{name}.weight"] for name in names]
    return b"".join(bytes(part.data.tobytes()) for part in parts), int(parts[0].tensor_type)


# ---- the candidates ------------------------------------------------------------------------------------
def _compiled_q4() -> Callable[..., torch.Tensor]:
    def q4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        out = packed.shape[0]
        blocks = packed.reshape(out, -1, BLOCK // 2)
        q = torch.cat([blocks & 0x0F, blocks >> 4], dim=2).float()  # (N, B, 32)
        weight = (scale.float()[..., None] * q + minimum.float()[..., None]).reshape(out, -1)
        return x @ weight.t()

    torch._dynamo.reset()  # one compile per shape and batch: never hit the recompile limit (8), which falls back to eager
    return torch.compile(q4_matmul, dynamic=False)


def candidates(weights: list[torch.Tensor], raws: list[tuple[bytes, int]], rows: int,
               ggml: Ggml | None) -> dict[str, tuple[Kernel, int]]:
    """name -> (kernel, weight bytes read per call)."""
    from torch.ao.nn.quantized import dynamic as quantized_dynamic

    from models.quantize import dynamic_linear, quantize_rows

    out, k = weights[0].shape
    result: dict[str, tuple[Kernel, int]] = {}
    result["fp32 F.linear"] = (lambda x, i: F.linear(x, weights[i]), out * k * 4)
    bf16 = [w.bfloat16() for w in weights]
    result["bf16 F.linear"] = (lambda x, i: F.linear(x.bfloat16(), bf16[i]), out * k * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rowwise = [quantize_rows(w) for w in weights]
        dynamic: list[quantized_dynamic.Linear] = [dynamic_linear(q, s) for q, s in rowwise]
    result["fbgemm dynamic int8"] = (lambda x, i: dynamic[i](x), out * k + out * 8)
    int8_scales = [(q, s) for q, s in rowwise]
    result["_weight_int8pack_mm fp32"] = (lambda x, i: torch._weight_int8pack_mm(x, *int8_scales[i]), out * k + out * 4)
    int8_bf16 = [(q, s.bfloat16()) for q, s in rowwise]
    result["_weight_int8pack_mm bf16"] = (lambda x, i: torch._weight_int8pack_mm(x.bfloat16(), *int8_bf16[i]),
                                          out * k + out * 2)
    q4 = [encode_q4(w) for w in weights]
    int4 = [_int4pack(e) for e in q4]
    result["_weight_int4pack_mm_for_cpu fp32"] = (
        lambda x, i: torch.ops.aten._weight_int4pack_mm_for_cpu(x, int4[i][0], BLOCK, int4[i][1]),
        out * k // 2 + out * k // BLOCK * 8)
    int4_bf16 = [(packed, scale_zero.bfloat16()) for packed, scale_zero in int4]
    result["_weight_int4pack_mm_for_cpu bf16"] = (
        lambda x, i: torch.ops.aten._weight_int4pack_mm_for_cpu(x.bfloat16(), int4_bf16[i][0], BLOCK, int4_bf16[i][1]),
        out * k // 2 + out * k // BLOCK * 4)
    compiled = _compiled_q4()
    result["torch.compile dequant+mm q4"] = (lambda x, i: compiled(x, q4[i].qweight, q4[i].scale, q4[i].minimum),
                                             nbytes(q4[0]))
    q4_modules = [LowBitLinear(e) for e in q4]
    result["lowbit C q4 (ours)"] = (lambda x, i: q4_modules[i](x), nbytes(q4[0]))
    q8 = [encode_q8(w) for w in weights]
    q8_modules = [LowBitLinear(e) for e in q8]
    result["lowbit C q8 (ours)"] = (lambda x, i: q8_modules[i](x), nbytes(q8[0]))
    if ggml is not None:
        runs = [ggml.matmul(raw, ggml_type, out, k, rows) for raw, ggml_type in raws]
        kind = {3: "Q4_1", 8: "Q8_0"}.get(raws[0][1], str(raws[0][1]))
        result[f"llama.cpp ggml {kind}"] = (lambda x, i: runs[i](x, torch.get_num_threads()), len(raws[0][0]))
    return result


def _int4pack(encoded: Q4Weight) -> tuple[torch.Tensor, torch.Tensor]:
    """aten int4pack layout: w = (q - 8) * scale + zero, zero = min + 8 * scale, (K/32, N, 2) float32."""
    out = encoded.qweight.shape[0]
    blocks = encoded.qweight.reshape(out, -1, BLOCK // 2)
    q = torch.cat([blocks & 0x0F, blocks >> 4], dim=2).reshape(out, -1).to(torch.int32)  # (N, K)
    scale, minimum = encoded.scale.float(), encoded.minimum.float()
    scale_zero = torch.stack([scale, minimum + 8 * scale], dim=2).transpose(0, 1).contiguous()
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2), scale_zero


def time_kernel(kernel: Kernel, x: torch.Tensor, copies: int) -> float:
    """Median-free mean µs per call over enough calls, cycling the weight copies."""
    for i in range(3):
        kernel(x, i % copies)
    calls, elapsed, started = 0, 0.0, time.perf_counter()
    while calls < MIN_CALLS or elapsed < TARGET_S:
        kernel(x, calls % copies)
        calls += 1
        elapsed = time.perf_counter() - started
    return elapsed / calls * 1e6


def study(threads_list: list[int], batches: list[int], only: str | None = None) -> list[dict[str, object]]:
    from gguf import GGUFReader

    from models.store import ModelStore

    model = ModelStore(default_store_root()).load("smollm2-135m").model
    reader = GGUFReader(str(gguf_path()))
    try:
        ggml: Ggml | None = Ggml()
    except OSError as error:
        logger.warning("ggml unavailable: %s", error)
        ggml = None
    rows_out: list[dict[str, object]] = []
    for shape, (store_names, gguf_names) in SHAPES.items():
        weights = store_weights(model, store_names)
        layers = [None] if store_names == ("embed",) else list(range(LAYERS))
        raws = [gguf_raw(reader, gguf_names, layer) for layer in layers]
        for rows in batches:
            kernels = candidates(weights, raws, rows, ggml)
            x = torch.randn(rows, weights[0].shape[1])
            reference = F.linear(x, weights[0])
            for threads in threads_list:
                torch.set_num_threads(threads)
                for name, (kernel, weight_bytes) in kernels.items():
                    if only is not None and only not in name:
                        continue
                    error = float((kernel(x, 0).float() - reference).abs().max())
                    micros = time_kernel(kernel, x, len(weights))
                    row = {"shape": shape, "rows": rows, "threads": threads, "kernel": name, "us": round(micros, 1),
                           "gb_s": round(weight_bytes / micros / 1e3, 2), "max_abs_error": float(f"{error:.3g}")}
                    rows_out.append(row)
                    print(f"{shape:24s} M={rows} t={threads} {name:34s} {micros:9.1f} µs "
                          f"{row['gb_s']:6.2f} GB/s  err {error:.2g}", flush=True)
    return rows_out


def winners(rows: list[dict[str, object]]) -> dict[str, str]:
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        key = f"{row['shape']} M={row['rows']} t={row['threads']}"
        if key not in best or float(row["us"]) < best[key][0]:  # type: ignore[arg-type]
            best[key] = (float(row["us"]), str(row["kernel"]))  # type: ignore[arg-type]
    return {key: f"{name} ({micros:.0f} µs)" for key, (micros, name) in best.items()}


def markdown_tables(rows: list[dict[str, object]]) -> str:
    """One table per thread count: a line per shape and batch, µs (GB/s) per kernel, the fastest in bold."""
    kernels = list(dict.fromkeys(str(row["kernel"]) for row in rows))
    lines = []
    for threads in sorted({int(row["threads"]) for row in rows}):  # type: ignore[call-overload]
        lines += [f"\n**{threads} thread{'s' if threads > 1 else ''}** — µs per call (effective GB/s)\n",
                  "| shape | M | " + " | ".join(kernels) + " |", "|---|---|" + "---|" * len(kernels)]
        cells: dict[tuple[str, int], dict[str, dict[str, object]]] = {}
        for row in rows:
            if row["threads"] == threads:
                cells.setdefault((str(row["shape"]), int(row["rows"])), {})[str(row["kernel"])] = row  # type: ignore[call-overload]
        for (shape, batch), by_kernel in cells.items():
            fastest = min(by_kernel.values(), key=lambda row: float(row["us"]))  # type: ignore[arg-type]
            texts = []
            for kernel in kernels:
                row = by_kernel.get(kernel)
                text = "" if row is None else f"{float(row['us']):.0f} ({float(row['gb_s']):.1f})"  # type: ignore[arg-type]
                texts.append(f"**{text}**" if row is fastest else text)
            lines.append(f"| {shape} | {batch} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--only", help="measure only the kernels whose name contains this")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON last")
    parser.add_argument("--markdown", metavar="JSON", help="only print the tables of a saved --json line")
    args = parser.parse_args()
    if args.markdown:
        print(markdown_tables(json.loads(Path(args.markdown).read_text().strip().splitlines()[-1])["rows"]))
        return
    logging.basicConfig(level=logging.WARNING)
    rows = study(args.threads, args.batches, args.only)
    best = winners(rows)
    for key, value in best.items():
        print(f"best {key}: {value}")
    if args.json:
        print(json.dumps({"rows": rows, "best": best}))


if __name__ == "__main__":
    main()
