"""A GGUF file's own 4-bit blocks, for the int4 build with phils' kernels: used as they are, not rounded twice.

A GGUF model reaches the build as the fp32 checkpoint it was dequantized
into. Quantizing those values to 4 bits again rounds each weight a second
time: a Q4_K block is ``scale * code - min`` with a min that is no multiple
of the scale, so a 4-bit grid with an integer zero point cannot hold it and
every weight moves by up to half a step. Qwen2.5-Coder-1.5B (Q4_K_M) built
that way wrote ``# TODO`` / ``pass`` where the same GGUF in llama.cpp writes
the loop. The kernel's block is ``scale * code - offset`` with a free
offset (``q4_kernel``), the very form of Q4_0, Q4_1 and Q4_K's 32-weight
sub-blocks: their codes, scales and mins go in unchanged.

Rows are found by content, not by name: the builder fuses and renames
matrices (q, k and v in one), so each row of a matrix it emits is looked up
by its first 32 values and kept only where the whole row equals the GGUF
row's dequantized values; the rest (a Q6_K tensor's rows) are quantized as
any other weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BLOCK = 32  # weights per scale, in all three types and in the kernel
# The lookup table, never a MatMul the build quantizes, and the output head, whose bits engine.int4_head sets.
SKIPPED = ("token_embd.weight", "output.weight")


@dataclass
class Blocks:
    """Rows of 4-bit weights as ``scale * code - offset`` per block of 32 along K."""

    codes: np.ndarray  # [rows, K] uint8, 0..15
    scale: np.ndarray  # [rows, K/32] fp32
    offset: np.ndarray  # [rows, K/32] fp32
    # The input channels' order along K (None: as the matrix has them): act-order GPTQ's groups made runs.
    perm: np.ndarray | None = None

    @classmethod
    def zeros(cls, rows: int, k: int) -> "Blocks":
        return cls(np.zeros((rows, k), dtype=np.uint8), *np.zeros((2, rows, k // BLOCK), dtype=np.float32))

    def values(self) -> np.ndarray:
        """The weights (Q4_1 and Q4_K as gguf's dequantizer computes them, bit for bit; Q4_0 to a float's rounding)."""
        rows, k = self.codes.shape
        codes = self.codes.reshape(rows, k // BLOCK, BLOCK).astype(np.float32)
        return (self.scale[..., None] * codes - self.offset[..., None]).reshape(rows, k)


def _nibbles(qs: np.ndarray, half: int) -> np.ndarray:
    """GGML's packing: in each run of ``half`` bytes, byte j holds value j (low nibble) and j + half (high)."""
    runs = qs.reshape(qs.shape[0], -1, 1, half) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (runs & np.uint8(0x0F)).reshape(qs.shape[0], -1)


def _q4_0(raw: np.ndarray, k: int) -> Blocks:
    rows = raw.shape[0]
    blocks = raw.reshape(rows * (k // BLOCK), 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32).reshape(rows, -1)
    codes = _nibbles(blocks[:, 2:], 16).reshape(rows, k)
    return Blocks(codes, d, d * np.float32(8))  # d * (q - 8)


def _q4_1(raw: np.ndarray, k: int) -> Blocks:
    rows = raw.shape[0]
    blocks = raw.reshape(rows * (k // BLOCK), 20)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32).reshape(rows, -1)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32).reshape(rows, -1)
    codes = _nibbles(blocks[:, 4:], 16).reshape(rows, k)
    return Blocks(codes, d, -m)  # d * q + m


def _q4_k(raw: np.ndarray, k: int) -> Blocks:
    from gguf.quants import Q4_K

    rows = raw.shape[0]
    blocks = raw.reshape(rows * (k // 256), 144)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = Q4_K.get_scale_min(blocks[:, 4:16].copy())
    scale = (d * sc.astype(np.float32)).reshape(rows, -1)
    offset = (dmin * m.astype(np.float32)).reshape(rows, -1)
    codes = _nibbles(blocks[:, 16:], 32).reshape(rows, k)
    return Blocks(codes, scale, offset)


DECODERS = {"Q4_0": (_q4_0, 18, BLOCK), "Q4_1": (_q4_1, 20, BLOCK), "Q4_K": (_q4_k, 144, 256)}


def _key(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values[:BLOCK], dtype=np.float32).tobytes()


def hits(index: dict[bytes, tuple[int, int]], weight: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    """The rows of ``weight`` whose first block ``index`` holds, by source matrix: {matrix: [(row, its row)]}."""
    wanted: dict[int, list[tuple[int, int]]] = {}
    for row in range(weight.shape[0]):
        hit = index.get(_key(weight[row]))
        if hit is not None:
            wanted.setdefault(hit[0], []).append((row, hit[1]))
    return wanted


def take_equal(out: Blocks, found: np.ndarray, ours: np.ndarray, blocks: Blocks, expected: np.ndarray,
               steps: float, absolute: float = 0.0) -> None:
    """Copy into rows ``ours`` of ``out`` those of ``blocks`` whose values are ``expected`` [rows, K] within
    ``steps`` of a quantization step (plus ``absolute``; a row that only starts alike differs by whole
    steps), and mark them found."""
    tolerance = steps * np.repeat(np.abs(blocks.scale), BLOCK, axis=1) + absolute
    same = (np.abs(blocks.values() - expected) <= tolerance).all(axis=1)
    ours, rows = ours[same], np.flatnonzero(same)
    out.codes[ours], out.scale[ours], out.offset[ours] = blocks.codes[rows], blocks.scale[rows], blocks.offset[rows]
    found[ours] = True


class GgufBlocks:
    """The matrices of one GGUF file, their rows indexed by their first block's values.

    Rows of 4-bit tensors keep their blocks (``find``); rows of tensors the file stores with more
    bits (Q5_0, Q6_K, Q8_0, F16: what a "Q4_K_M" file keeps wider) are only recognised (``wider``).
    """

    def __init__(self, path: str | Path):
        from gguf import GGUFReader
        from gguf.constants import GGML_QUANT_SIZES
        from gguf.quants import dequantize

        self.path = Path(path)
        self._tensors: list[tuple[Any, str]] = []
        self._rows: dict[bytes, tuple[int, int]] = {}
        self._wider: set[bytes] = set()
        for tensor in GGUFReader(str(path)).tensors:
            kind = tensor.tensor_type.name
            if tensor.name in SKIPPED or len(tensor.shape) != 2 or int(tensor.shape[0]) % BLOCK:
                continue
            if kind in DECODERS:
                _, size, span = DECODERS[kind]
                if int(tensor.shape[0]) % span:
                    continue
                index = len(self._tensors)
                self._tensors.append((tensor.data, kind))
                # Each row's first block as gguf dequantizes it: what the checkpoint holds, to the bit.
                first = dequantize(np.asarray(tensor.data[:, :size]), tensor.tensor_type)
                for row, values in enumerate(first):
                    self._rows.setdefault(_key(values), (index, row))
                continue
            span, size = GGML_QUANT_SIZES[tensor.tensor_type]
            try:
                if kind in ("F32", "F16"):
                    first = np.asarray(tensor.data[:, :BLOCK]).astype(np.float32)
                else:
                    first = dequantize(np.asarray(tensor.data[:, :max(1, BLOCK // span) * size]), tensor.tensor_type)
            except (NotImplementedError, ValueError) as exc:  # a type gguf-py cannot dequantize
                log.debug("%s: %s not indexed: %s", self.path.name, tensor.name, exc)
                continue
            self._wider.update(_key(values) for values in first)
        log.info("%s: %d rows of 4-bit blocks in %d tensors, %d rows stored wider", self.path.name, len(self._rows),
                 len(self._tensors), len(self._wider))

    def wider(self, weight: np.ndarray) -> int:
        """How many rows of ``weight`` [N, K] the file stores with more than 4 bits a weight."""
        return sum(_key(row) in self._wider for row in weight) if self._wider else 0

    def find(self, weight: np.ndarray) -> tuple[np.ndarray, Blocks]:
        """For ``weight`` [N, K] fp32: which rows are a GGUF tensor's rows exactly, and the blocks of those
        (in ``weight``'s order; zeros for the other rows)."""
        n, k = weight.shape
        found = np.zeros(n, dtype=bool)
        out = Blocks.zeros(n, k)
        if k % BLOCK:  # no GGUF block spans such rows
            return found, out
        for index, pairs in hits(self._rows, weight).items():
            data, kind = self._tensors[index]
            decode, size, span = DECODERS[kind]
            if data.shape[1] != k // span * size:  # another width: not these rows
                continue
            ours, theirs = (np.array(side) for side in zip(*pairs))
            blocks = decode(np.asarray(data[theirs]), k)
            # Equal but for float rounding (Q4_0's d * (q - 8) is computed here as d * q - 8d).
            take_equal(out, found, ours, blocks, weight[ours], 1e-5)
        return found, out
