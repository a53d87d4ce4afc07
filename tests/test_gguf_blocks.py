"""A GGUF file's own 4-bit blocks in the int4 build: found by content, exact, and not rounded a second time."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="gguf-py reads GGUF files (a dependency of phils' GGUF loading)")

from gguf.quants import dequantize  # noqa: E402

from phils.engine.runtimes import q4_kernel  # noqa: E402
from phils.engine.runtimes.gguf_blocks import DECODERS, GgufBlocks  # noqa: E402
from phils.engine.runtimes.int4_quant import quantize_blocks  # noqa: E402
from test_q4_kernel import weights_in_layout  # noqa: E402

Q = gguf.GGMLQuantizationType


def _raw(kind: str, rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Valid blocks of ``kind``: random codes and 6-bit scales, modest fp16 scales (no inf or NaN)."""
    _, size, span = DECODERS[kind]
    raw = rng.integers(0, 256, size=(rows * (k // span), size), dtype=np.uint8)
    halves = {"Q4_0": 1, "Q4_1": 2, "Q4_K": 2}[kind]
    scales = (rng.uniform(0.001, 0.02, size=(raw.shape[0], halves)) * rng.choice([-1, 1], size=(raw.shape[0], halves)))
    if kind == "Q4_K":
        scales = np.abs(scales)  # d and dmin: the mins are subtracted
    raw[:, :2 * halves] = scales.astype(np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    tensors = {"blk.0.attn_q.weight": ("Q4_0", 48, 64), "blk.0.ffn_up.weight": ("Q4_1", 32, 96),
               "blk.0.ffn_gate.weight": ("Q4_K", 32, 512), "token_embd.weight": ("Q4_0", 16, 64)}
    raws = {}
    for name, (kind, rows, k) in tensors.items():
        raws[name] = (kind, _raw(kind, rows, k, rng))
        writer.add_tensor(name, raws[name][1], raw_dtype=Q[kind])
    wide = rng.standard_normal((16, 64)).astype(np.float32) * 0.05
    wide_raw = gguf.quants.quantize(wide, Q.Q8_0)  # what a "Q4_K_M" file keeps wider (Gemma's attn_v)
    writer.add_tensor("blk.0.attn_v.weight", wide_raw, raw_dtype=Q.Q8_0)
    raws["blk.0.attn_v.weight"] = ("Q8_0", wide_raw)
    writer.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(64).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    dense = {name: dequantize(raw, Q[kind]) for name, (kind, raw) in raws.items()}
    return path, dense


def test_the_blocks_hold_what_ggufs_own_dequantizer_computes(model_file):
    path, dense = model_file
    own = GgufBlocks(path)
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_up.weight", "blk.0.ffn_gate.weight"):
        found, blocks = own.find(dense[name])
        assert found.all(), name
        if name == "blk.0.attn_q.weight":  # Q4_0: d * (q - 8) there, d * q - 8d here
            assert np.allclose(blocks.values(), dense[name], rtol=0, atol=1e-7), name
        else:
            assert np.array_equal(blocks.values(), dense[name]), name
        assert blocks.codes.max() <= 15


def test_rows_are_found_by_content_wherever_the_builder_puts_them(model_file):
    """Fused and reordered (q, k and v in one matrix), mixed with rows the file does not hold in 4 bits."""
    path, dense = model_file
    rng = np.random.default_rng(1)
    q = dense["blk.0.attn_q.weight"]
    strangers = rng.standard_normal((16, 64)).astype(np.float32) * 0.05
    near_miss = q[:1].copy()
    near_miss[0, 40] += 1e-3  # the same first block, another row: verified, not taken
    embedding_row = dense["token_embd.weight"][:1]  # the lookup table is not indexed
    fused = np.concatenate([q[::-1], strangers, near_miss, embedding_row])
    found, blocks = GgufBlocks(path).find(fused)
    assert found.tolist() == [True] * 48 + [False] * 18
    assert np.allclose(blocks.values()[found], q[::-1], rtol=0, atol=1e-7)


def test_in_the_kernels_layout_they_lose_only_the_fp16_rounding_of_scales(model_file):
    """Rounded again to a 4-bit grid with integer zero points, the same weights move by up to half a step."""
    path, dense = model_file
    w = dense["blk.0.ffn_gate.weight"]
    n, k = w.shape
    found, blocks = GgufBlocks(path).find(w)
    own = weights_in_layout(*q4_kernel.layout(blocks.codes, blocks.scale, blocks.offset, k, n), k, n)
    again = weights_in_layout(*q4_kernel.repack(*quantize_blocks(np.ascontiguousarray(w.T), 32), k, n), k, n)
    step = np.repeat(blocks.scale, 32, axis=1)
    assert np.abs(own - w).max() < 0.01 * step.max()
    assert np.abs(again - w).mean() > 10 * np.abs(own - w).mean()


def test_rows_the_file_stores_wider_are_recognised_not_taken(model_file):
    """A Q8_0 matrix is no 4-bit block: the build gives the matrix holding its rows 8 bits (int4_gguf = keep)."""
    path, dense = model_file
    own = GgufBlocks(path)
    wide, q = dense["blk.0.attn_v.weight"], dense["blk.0.attn_q.weight"]
    assert own.wider(wide) == 16 and own.wider(q) == 0
    fused = np.concatenate([q, wide])  # q, k and v in one matrix
    found, _ = own.find(fused)
    assert own.wider(fused) == 16 and found.tolist() == [True] * 48 + [False] * 16
