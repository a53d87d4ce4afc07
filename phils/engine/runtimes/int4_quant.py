"""4-bit block quantization of a MatMul weight for MatMulNBits, with a searched clipping range.

Rounding each block to 16 levels spread over its full range (MLAS' quantizer,
round-to-nearest) spends levels on the block's one or two extreme weights;
shrinking the range a little and clipping those rounds the many small weights
more finely. Per block, the range that gives the least squared error over a
grid of shrink factors is kept (the search llama.cpp's k-quants and HQQ-style
quantizers make). It costs only build time: the file has the same layout and
runs on the same kernel (numbers in int4_build).

Layout, as onnxruntime's ``quantize_matmul_4bits`` writes it for a [K, N]
weight: ``packed`` [N, K/B, B/2] uint8 (element 2i in the low nibble),
``scales`` [N, K/B] fp32, ``zero_points`` [N, ceil(K/B / 2)] uint8 (block 2j
in the low nibble); K is padded to a multiple of B (codes 0, a spare
zero-point nibble 8).
"""

from __future__ import annotations

import numpy as np
import torch

LEVELS = 15  # the largest 4-bit code
SLICE = 128  # output columns per slice: 128 x 2 560 fp32 weights stay in a core's L2 cache
SHRINKS = tuple(1.0 - 0.05 * i for i in range(9))  # 1.0 down to 0.6 of the block's range


def quantize_blocks(matrix: np.ndarray, block_size: int, symmetric: bool = False,
                    shrinks: tuple[float, ...] = SHRINKS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``matrix`` [K, N] fp32 → (packed, scales, zero_points) in MatMulNBits' layout; ``shrinks=(1.0,)`` is plain RTN."""
    rows, cols = matrix.shape
    blocks = -(-rows // block_size)
    weight = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)).T  # [N, K]
    if blocks * block_size != rows:
        weight = torch.nn.functional.pad(weight, (0, blocks * block_size - rows))
    weight = weight.reshape(cols, blocks, block_size)
    best_codes = torch.zeros(weight.shape, dtype=torch.uint8)
    best_scale = torch.zeros(cols, blocks)
    best_zero = torch.zeros(cols, blocks)
    for start in range(0, cols, SLICE):  # a slice of output columns at a time: its passes stay in the cache
        w = weight[start:start + SLICE]
        codes, scale, zero = _search(w, symmetric, shrinks)
        best_codes[start:start + SLICE], best_scale[start:start + SLICE], best_zero[start:start + SLICE] = codes, scale, zero
    best_codes.view(cols, -1)[:, rows:] = 0  # the padding's codes, as onnxruntime leaves them
    packed = (best_codes[..., 0::2] | (best_codes[..., 1::2] << 4)).numpy()
    zeros = best_zero.to(torch.uint8)
    if blocks % 2:  # the unused nibble of the last byte holds 8, as onnxruntime writes it
        zeros = torch.nn.functional.pad(zeros, (0, 1), value=8)
    zero_points = (zeros[:, 0::2] | (zeros[:, 1::2] << 4)).numpy()
    return packed, best_scale.numpy(), zero_points


def _search(w: torch.Tensor, symmetric: bool, shrinks: tuple[float, ...]):
    """The codes, scale and zero point of each block of ``w`` [n, blocks, B] with the least squared error."""
    low = w.amin(-1).clamp(max=0.0)
    high = w.amax(-1).clamp(min=0.0)
    if symmetric:  # MLAS' symmetric form: the extreme of larger magnitude maps to -8, zero point 8
        extreme = torch.where(high > -low, high, low)
    best_error = torch.full(low.shape, float("inf"))
    best_scale, best_zero = torch.zeros_like(low), torch.zeros_like(low)
    work = torch.empty_like(w)  # one buffer, written in place: the search is bound by passes over memory
    for shrink in shrinks:
        scale, zero = _scale_and_zero(low, high, extreme if symmetric else None, shrink)
        error = _round(w, scale, zero, work).sub_(w).square_().sum(-1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    codes = _codes(w, best_scale, best_zero, work)
    return codes.to(torch.uint8), best_scale, best_zero


def _scale_and_zero(low, high, extreme, shrink):
    if extreme is not None:
        scale = extreme * shrink / -8.0
        return scale, torch.full_like(scale, 8.0)
    scale = (high - low) * shrink / LEVELS
    zero = torch.where(scale > 0, (-low * shrink / scale.where(scale > 0, 1.0)).round(), 0.0).clamp(0, LEVELS)
    return scale, zero


def _codes(w, scale, zero, out):
    """round(w / scale) + zero, clamped to the 4-bit codes (MLAS multiplies by the reciprocal: so do we)."""
    inverse = torch.where(scale != 0, 1.0 / scale.where(scale != 0, 1.0), 0.0)
    torch.mul(w, inverse.unsqueeze(-1), out=out)
    return out.add_(zero.unsqueeze(-1)).round_().clamp_(0, LEVELS)


def _round(w, scale, zero, out):
    """The block's weights as the codes represent them."""
    return _codes(w, scale, zero, out).sub_(zero.unsqueeze(-1)).mul_(scale.unsqueeze(-1))
