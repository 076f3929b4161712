"""Build (once, cached under .fleet/kernels) and call the C kernels of kernels.c through ctypes (their
worker threads: pool.c).

The library is compiled with the machine's gcc for its own CPU (-march=native); the file name
carries a hash of the source, the flags and the CPU model, so a change rebuilds it. Without a
compiler `kernels()` returns None and callers fall back to dequantize + F.linear.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path

import torch

from models.paths import REPO_ROOT

logger = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).resolve().parent / name for name in ("kernels.c", "pool.c"))
HEADERS = (Path(__file__).resolve().parent / "pool.h",)  # part of the hash: a change rebuilds
FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-pthread", "-shared", "-fPIC")
KERNEL_DIR_ENV = "EDGEFLEET_KERNEL_DIR"
BUILD_TIMEOUT_S = 120
MAX_ROWS = 8  # rows of x per weight pass in kernels.c (larger batches loop over chunks of 8)
# A thread is worth waking for at least this many weights (~40 µs of work at M = 1): on 2 shared
# cores a second thread for a 576 x 576 call doubled its time (docs/lowbit.md).
WEIGHTS_PER_THREAD = 400_000


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path() -> Path:
    source = b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    key = hashlib.sha256(source + " ".join(FLAGS).encode() + _cpu_model().encode()).hexdigest()[:16]
    directory = Path(os.environ.get(KERNEL_DIR_ENV, REPO_ROOT / ".fleet" / "kernels"))
    return directory / f"lowbit-{key}.so"


def build(path: Path) -> None:
    """Compile the sources into `path` (atomically). Raises OSError or subprocess.CalledProcessError."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise OSError("no C compiler (gcc) on PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as staging:
        target = Path(staging) / path.name
        subprocess.run([compiler, *FLAGS, "-o", str(target), *map(str, SOURCES)], check=True, capture_output=True,
                       text=True, timeout=BUILD_TIMEOUT_S)
        target.rename(path)
    logger.info("built low-bit kernels %s", path)


_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_SIGNATURES = {
    "q4_linear": (_P, _I64, _I64, _P, _P, _P, _I64, _P, ctypes.c_int),
    "q8_linear": (_P, _I64, _I64, _P, _P, _I64, _P, ctypes.c_int),
    "f32_linear": (_P, _I64, _I64, _P, _I64, _P, ctypes.c_int),
    "pool_set_spin_us": (_I64,),
    "pool_spin_us": (),
    "q4_dequantize": (_P, _P, _P, _I64, _I64, _P, ctypes.c_int),
    "q8_dequantize": (_P, _P, _I64, _I64, _P, ctypes.c_int),
}
_RESULTS = {"pool_spin_us": _I64}  # every other function returns nothing


@cache
def kernels() -> ctypes.CDLL | None:
    """The loaded kernel library (built on first use), or None if it cannot be built here."""
    path = library_path()
    try:
        if not path.is_file():
            build(path)
        library = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or ""
        logger.warning("low-bit kernels unavailable (%s %s); using dequantize + F.linear", error, detail[-500:])
        return None
    for name, argtypes in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, _RESULTS.get(name)
    return library


def set_worker_spin(microseconds: int) -> None:
    """How long the kernels' idle workers poll for the next call before sleeping (pool.c); 0 = sleep at once.

    A process under a CPU quota should not poll: polling spends the quota its own work needs.
    """
    library = kernels()
    if library is not None:
        library.pool_set_spin_us(max(0, int(microseconds)))


def worker_spin() -> int | None:
    """The idle workers' polling time in microseconds, None without the kernels."""
    library = kernels()
    return None if library is None else int(library.pool_spin_us())


def threads_for(weights: int) -> int:
    """Threads for a call over `weights` weights: torch's thread count, fewer for small matrices."""
    return max(1, min(torch.get_num_threads(), weights // WEIGHTS_PER_THREAD))


def q4_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
    """(M, K) float32 contiguous x -> (M, N) through the q4 kernel (the library must be available)."""
    rows, k = x.shape
    out = qweight.shape[0]
    y = torch.empty(rows, out)
    kernels().q4_linear(x.data_ptr(), rows, k, qweight.data_ptr(), scale.data_ptr(), minimum.data_ptr(),  # type: ignore[union-attr]
                        out, y.data_ptr(), threads_for(out * k))
    return y


def q8_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(M, K) float32 contiguous x -> (M, N) through the q8 kernel (the library must be available)."""
    rows, k = x.shape
    out = qweight.shape[0]
    y = torch.empty(rows, out)
    kernels().q8_linear(x.data_ptr(), rows, k, qweight.data_ptr(), scale.data_ptr(), out, y.data_ptr(),  # type: ignore[union-attr]
                        threads_for(out * k))
    return y


def f32_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(M, K) float32 contiguous x -> (M, N) through the float32 kernel; weight (N, K) float32 contiguous,
    K a multiple of 16 (the library must be available)."""
    rows, k = x.shape
    out = weight.shape[0]
    y = torch.empty(rows, out)
    kernels().f32_linear(x.data_ptr(), rows, k, weight.data_ptr(), out, y.data_ptr(),  # type: ignore[union-attr]
                         threads_for(out * k))
    return y


_scratch = threading.local()


def scratch(out: int, k: int) -> torch.Tensor:
    """A per-thread (out, k) float32 buffer reused across calls: a fresh multi-MB tensor costs page faults."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < out * k:
        buffer = _scratch.buffer = torch.empty(out * k)
    return buffer[: out * k].view(out, k)


def q4_dequantize(qweight: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) float32 weights, written into `weight` if given."""
    out, k = qweight.shape[0], qweight.shape[1] * 2
    weight = torch.empty(out, k) if weight is None else weight
    kernels().q4_dequantize(qweight.data_ptr(), scale.data_ptr(), minimum.data_ptr(), out, k, weight.data_ptr(),  # type: ignore[union-attr]
                            torch.get_num_threads())
    return weight


def q8_dequantize(qweight: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) float32 weights, written into `weight` if given."""
    out, k = qweight.shape
    weight = torch.empty(out, k) if weight is None else weight
    kernels().q8_dequantize(qweight.data_ptr(), scale.data_ptr(), out, k, weight.data_ptr(),  # type: ignore[union-attr]
                            torch.get_num_threads())
    return weight
