"""Our kernels for the int4 runtime (``kernels/``), built once for this machine.

The int4 runtime runs on MLAS' MatMulNBits and ONNX Runtime's attention
everywhere; on a CPU with AVX-512 VNNI and a C compiler, two ONNX Runtime
custom operators take over: ``phils.Q4MatMul`` for the 4-bit matrices (0.43x
MatMulNBits' time for eight tokens and 0.71x for one on this project's
machine, bench/results/q4-kernel.md), ``phils.Q8MatMul`` for the 8-bit ones
(the output head), ``phils.AttentionF16``, attention over an fp16 key/value
cache (half the bytes ONNX Runtime's fp32 cache reads a token), and
``phils.LastRows``, which places the head's rows in GenAI's logits buffer.
The library is compiled into phils' cache the first time (about 3 s) and ONNX Runtime GenAI loads it with the model (``custom_ops_library``).
Without either, the build keeps ONNX Runtime's own operators: ``library``
says why in the log and returns None.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
SOURCES = [KERNELS / name for name in ("q4_matmul.c", "attention_f16.c", "last_rows.c")]
HEADER = KERNELS / "ort_helpers.h"  # ours, shared by both sources: part of what the library is built from
# Explicit instruction sets rather than -march=native: the library runs on any CPU with these.
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mf16c", "-mfma", "-fPIC", "-shared"]
NEEDED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "f16c", "fma")  # as /proc/cpuinfo spells them
DOMAIN = "phils"  # the operator's ONNX domain (RegisterCustomOps in q4_matmul.c)
BLOCK = 32  # weights per scale along K: the kernel's only layout
ROWS = 16  # output rows per group


def unavailable_reason() -> str | None:
    """Why this machine cannot run the kernel, or None when it can."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"it is built for x86-64 Linux, not {platform.system()} {platform.machine()}"
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError as exc:
        return f"cannot read /proc/cpuinfo: {exc}"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    missing = [flag for flag in NEEDED_FLAGS if flag not in flags]
    if missing:
        return "the CPU lacks " + ", ".join(missing)
    if compiler() is None:
        return "no C compiler (cc, gcc or clang) was found"
    return None


def compiler() -> str | None:
    named = os.environ.get("CC")
    return shutil.which(named) if named else (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))


def library(cache: Path) -> Path | None:
    """The compiled operator library in ``cache`` (built on first use), or None when it cannot run here."""
    reason = unavailable_reason()
    if reason:
        log.info("int4 on ONNX Runtime's own operators: phils' kernels need AVX-512 VNNI and a C compiler, and %s",
                 reason)
        return None
    built_from = b"".join(p.read_bytes() for p in (*SOURCES, HEADER))
    digest = hashlib.sha256(built_from + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache / "kernels" / f"phils-q4-{digest}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    command = [str(compiler()), *FLAGS, "-I", str(KERNELS), "-o", str(partial), *map(str, SOURCES)]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("int4 on ONNX Runtime's own operators: compiling phils' kernels failed: %s", exc)
        return None
    if done.returncode != 0:
        log.warning("int4 on ONNX Runtime's own operators: compiling phils' kernels failed: %s",
                    (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1])
        partial.unlink(missing_ok=True)
        return None
    partial.replace(target)
    log.info("built %s", target)
    return target


def wanted(setting: str, block_size: int) -> bool:
    """Whether ``engine.int4_kernel`` and ``engine.int4_block`` ask for the kernels (the machine aside)."""
    return setting == "auto" and block_size == BLOCK


def fits(k: int, n: int, block_size: int, bits: int, symmetric: bool) -> bool:
    """Whether a MatMulNBits matrix of this kind can be run by the kernels instead (``Q4MatMul`` for 4 bits,
    ``Q8MatMul`` for 8)."""
    return bits in (4, 8) and block_size == BLOCK and not symmetric and k % BLOCK == 0 and n % ROWS == 0


def layout8(packed: Any, scales: Any, zero_points: Any, k: int, n: int) -> tuple[Any, Any, Any]:
    """8-bit MatMulNBits' tensors (B [N, K/32, 32], scales and zero points [N, K/32]) in Q8MatMul's layout:
    per group of 16 rows and block, 8 chunks of 64 bytes, byte r*4+j of chunk c row r's weight k = 4c+j;
    scales and zero points fp16 [N/16][K/32][16] (a zero point is an integer up to 255: exact in fp16)."""
    import numpy as np

    blocks, groups = k // BLOCK, n // ROWS
    codes = np.asarray(packed, dtype=np.uint8).reshape(groups, ROWS, blocks, 8, 4).transpose(0, 2, 3, 1, 4)
    by_group = lambda values: np.ascontiguousarray(  # noqa: E731
        np.asarray(values, dtype=np.float32).astype(np.float16).reshape(groups, ROWS, blocks).transpose(0, 2, 1)
    ).reshape(-1)
    return np.ascontiguousarray(codes).reshape(-1), by_group(scales), by_group(zero_points)


def repack(packed: Any, scales: Any, zero_points: Any, k: int, n: int) -> tuple[Any, Any, Any]:
    """MatMulNBits' tensors (B [N, K/32, 16], scales [N*K/32], zero points [N, K/64]) in the kernel's layout."""
    return layout(*blocks_of(packed, scales, zero_points, k, n), k, n)


def blocks_of(packed: Any, scales: Any, zero_points: Any, k: int, n: int) -> tuple[Any, Any, Any]:
    """MatMulNBits' tensors as codes [N, K] uint8, scale and offset [N, K/32] fp32 (w = scale * code - offset)."""
    import numpy as np

    blocks = k // BLOCK
    codes = _nibbles(np.asarray(packed, dtype=np.uint8).reshape(n, blocks, BLOCK // 2)).reshape(n, k)
    zero = _nibbles(np.asarray(zero_points, dtype=np.uint8).reshape(n, -1))[:, :blocks].astype(np.float32)
    scale = np.asarray(scales, dtype=np.float32).reshape(n, blocks)
    return codes, scale, zero * scale


def layout(codes: Any, scale: Any, offset: Any, k: int, n: int) -> tuple[Any, Any, Any]:
    """Codes [N, K] (0..15), scale and offset [N, K/32] (w = scale * code - offset) in the kernel's layout."""
    import numpy as np

    blocks, groups = k // BLOCK, n // ROWS
    weights = np.asarray(codes, dtype=np.uint8).reshape(n, blocks, BLOCK)
    # group, block, chunk of 8 weights, row, nibble (low: k = 8c+j, high: 8c+4+j), j
    six = weights.reshape(groups, ROWS, blocks, 4, 2, 4).transpose(0, 2, 3, 1, 4, 5)
    kernel_weights = np.ascontiguousarray(six[..., 0, :] | (six[..., 1, :] << 4)).reshape(-1)
    by_group = lambda values: np.ascontiguousarray(  # noqa: E731
        np.asarray(values).astype(np.float16).reshape(groups, ROWS, blocks).transpose(0, 2, 1)).reshape(-1)
    return kernel_weights, by_group(scale), by_group(offset)


def _nibbles(packed: Any) -> Any:
    """Two 4-bit values per byte along the last axis, low nibble first (MatMulNBits' order), one per byte."""
    import numpy as np

    values = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), dtype=np.uint8)
    values[..., 0::2], values[..., 1::2] = packed & 0x0F, packed >> 4
    return values
