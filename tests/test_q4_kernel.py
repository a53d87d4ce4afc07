"""Our 4- and 8-bit kernels (phils.Q4MatMul, phils.Q8MatMul): MatMulNBits' results in their own layout, chosen at
load where they can run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from phils.config import EngineSettings
from phils.engine.runtimes import q4_kernel
from phils.engine.runtimes.int4_quant import quantize_blocks
from phils.engine.loading.loader import load_model

UNAVAILABLE = q4_kernel.unavailable_reason()
needs_kernel = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"needs AVX-512 VNNI and a C compiler: {UNAVAILABLE}")


def _quantized(k: int, n: int, seed: int = 0):
    matrix = np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32) * 0.05
    return quantize_blocks(matrix, 32, False)  # MatMulNBits' tensors: B [N, K/32, 16], scales, zero points


def _dequantized(packed, scales, zeros, k: int, n: int) -> np.ndarray:
    """W [N, K] from MatMulNBits' tensors (low nibble first, zero points packed two to a byte)."""
    q = np.empty((n, k // 32, 32), np.float32)
    q[..., 0::2], q[..., 1::2] = packed & 0x0F, packed >> 4
    z = np.empty((n, zeros.reshape(n, -1).shape[1] * 2), np.float32)
    z[:, 0::2], z[:, 1::2] = zeros.reshape(n, -1) & 0x0F, zeros.reshape(n, -1) >> 4
    return ((q - z[:, : k // 32, None]) * scales.reshape(n, k // 32, 1)).reshape(n, k)


def weights_in_layout(weights, scale16, zero16, k: int, n: int) -> np.ndarray:
    """W [N, K] as the kernel's layout holds it (read the way q4_matmul.c reads it)."""
    groups, blocks = n // 16, k // 32
    chunks = weights.reshape(groups, blocks, 4, 16, 4)  # group, block, chunk, row, j
    low, high = (chunks & 0x0F).astype(np.float32), (chunks >> 4).astype(np.float32)
    q = np.concatenate([low, high], axis=-1)  # k = 8c + j (low), 8c + 4 + j (high)
    q = q.transpose(0, 3, 1, 2, 4).reshape(n, k)
    s = scale16.astype(np.float32).reshape(groups, blocks, 16).transpose(0, 2, 1).reshape(n, blocks)
    zs = zero16.astype(np.float32).reshape(groups, blocks, 16).transpose(0, 2, 1).reshape(n, blocks)
    return q * np.repeat(s, 32, axis=1) - np.repeat(zs, 32, axis=1)


def test_the_kernels_layout_holds_the_same_weights():
    k, n = 96, 48
    packed, scales, zeros = _quantized(k, n)
    rebuilt = weights_in_layout(*q4_kernel.repack(packed, scales, zeros, k, n), k, n)
    expected = _dequantized(packed, scales, zeros, k, n)
    assert np.allclose(rebuilt, expected, atol=2e-3 * np.abs(expected).max())  # fp16 scales


def test_only_what_the_kernel_can_run_goes_to_it():
    assert q4_kernel.fits(2560, 10240, 32, 4, False)
    assert q4_kernel.fits(2560, 51200, 32, 8, False)  # the 8-bit head: Q8MatMul
    assert not q4_kernel.fits(2560, 10240, 128, 4, False)  # another block size
    assert not q4_kernel.fits(2560, 10240, 32, 2, False)  # another width
    assert not q4_kernel.fits(2560, 10240, 32, 4, True)  # symmetric
    assert not q4_kernel.fits(80, 160, 32, 4, False) and not q4_kernel.fits(160, 40, 32, 4, False)


def _session(kind: str, packed, scales, zeros, k: int, n: int, library: Path | None, perm=None, bits: int = 4):
    """A one-node model: phils' kernel (``ours``: Q4MatMul, or Q8MatMul for ``bits`` 8) or MatMulNBits."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if kind == "ours":
        layout = q4_kernel.repack if bits == 4 else q4_kernel.layout8
        w, s, z = layout(packed, scales, zeros, k, n)
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(s, "S"), numpy_helper.from_array(z, "Z")]
        inputs = ["x", "W", "S", "Z"]
        if perm is not None:  # W's columns are x's channels in this order
            inits.append(numpy_helper.from_array(perm.astype(np.int32), "P"))
            inputs.append("P")
        node = helper.make_node(f"Q{bits}MatMul", inputs, ["y"], domain=q4_kernel.DOMAIN, K=k, N=n)
        domain = helper.make_opsetid(q4_kernel.DOMAIN, 1)
    else:
        inits = [numpy_helper.from_array(packed, "W"), numpy_helper.from_array(scales.astype(np.float32), "S"),
                 numpy_helper.from_array(zeros, "Z")]
        node = helper.make_node("MatMulNBits", ["x", "W", "S", "Z"], ["y"], domain="com.microsoft", K=k, N=n,
                                bits=bits, block_size=32, accuracy_level=4)
        domain = helper.make_opsetid("com.microsoft", 1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "M", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "M", n])], inits)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if library is not None:
        options.register_custom_ops_library(str(library))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), domain])
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _assert_agrees(ours, mlas, k: int, n: int, rng) -> None:
    """Our kernel gives MatMulNBits' results for any number of tokens, each token's row on its own."""
    for tokens in (1, 3, 8, 37):
        x = rng.standard_normal((1, tokens, k)).astype(np.float32)
        got, expected = ours.run(None, {"x": x})[0], mlas.run(None, {"x": x})[0]
        assert got.shape == (1, tokens, n)
        assert np.abs(got - expected).max() <= 3e-3 * np.abs(expected).max(), tokens
    # A token's row does not depend on the tokens beside it: a cached prefix gives a fresh prefill's numbers.
    x = rng.standard_normal((1, 8, k)).astype(np.float32)
    assert np.array_equal(ours.run(None, {"x": x})[0][:, 5:6], ours.run(None, {"x": x[:, 5:6]})[0])


@needs_kernel
def test_the_kernel_gives_what_matmulnbits_gives(tmp_path):
    k, n = 256, 96
    packed, scales, zeros = _quantized(k, n, seed=1)
    library = q4_kernel.library(tmp_path)
    assert library is not None and library.is_file()
    ours = _session("ours", packed, scales, zeros, k, n, library)
    mlas = _session("mlas", packed, scales, zeros, k, n, None)
    _assert_agrees(ours, mlas, k, n, np.random.default_rng(2))
    assert q4_kernel.library(tmp_path) == library  # compiled once


@needs_kernel
def test_the_kernel_reads_the_activations_in_the_order_its_columns_are(tmp_path):
    """Act-order GPTQ: W's column j is input channel perm[j]; the kernel gives x[..., perm] . W^T."""
    k, n = 128, 32
    packed, scales, zeros = _quantized(k, n, seed=3)
    perm = np.random.default_rng(4).permutation(k)
    library = q4_kernel.library(tmp_path)
    permuted = _session("ours", packed, scales, zeros, k, n, library, perm=perm)
    plain = _session("ours", packed, scales, zeros, k, n, library)
    for tokens in (1, 5):
        x = np.random.default_rng(tokens).standard_normal((1, tokens, k)).astype(np.float32)
        assert np.array_equal(permuted.run(None, {"x": x})[0], plain.run(None, {"x": np.ascontiguousarray(x[..., perm])})[0])
        assert not np.allclose(permuted.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def _quantized8(k: int, n: int, seed: int = 0):
    """8-bit MatMulNBits' tensors: B [N, K/32, 32], scales and zero points [N, K/32]."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, DefaultWeightOnlyQuantizer

    matrix = np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32) * 0.05
    matrix[:, 0] += 0.2  # a row far from zero: zero points far from the middle
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False, accuracy_level=4, bits=8)
    return DefaultWeightOnlyQuantizer(config).qbits_block_quant(matrix)


def test_the_8bit_layout_holds_the_same_weights():
    k, n = 96, 48
    packed, scales, zeros = _quantized8(k, n)
    weights, scale16, zero16 = q4_kernel.layout8(packed, scales, zeros, k, n)
    groups, blocks = n // 16, k // 32
    # group, block, chunk, row, j -> row, (block, chunk, j): k = 32 b + 4 c + j
    q = weights.reshape(groups, blocks, 8, 16, 4).transpose(0, 3, 1, 2, 4).reshape(n, k).astype(np.float32)
    per_row = lambda values: values.astype(np.float32).reshape(groups, blocks, 16).transpose(0, 2, 1).reshape(n, blocks)  # noqa: E731
    assert np.array_equal(per_row(zero16), zeros.astype(np.float32))  # zero points exact
    rebuilt = (q - np.repeat(per_row(zero16), 32, axis=1)) * np.repeat(per_row(scale16), 32, axis=1)
    expected = ((packed.astype(np.float32) - zeros[..., None]) * scales[..., None]).reshape(n, k)
    assert np.allclose(rebuilt, expected, atol=1e-3 * np.abs(expected).max())  # fp16 scales


@needs_kernel
def test_the_8bit_kernel_gives_what_matmulnbits_gives(tmp_path):
    k, n = 256, 96
    packed, scales, zeros = _quantized8(k, n, seed=5)
    library = q4_kernel.library(tmp_path)
    ours = _session("ours", packed, scales, zeros, k, n, library, bits=8)
    mlas = _session("mlas", packed, scales, zeros, k, n, None, bits=8)
    _assert_agrees(ours, mlas, k, n, np.random.default_rng(6))


@needs_kernel
def test_int4_runs_its_matrices_on_the_kernel_and_agrees_with_mlas(tiny80_model, tmp_path):
    import onnx

    settings = EngineSettings(model=str(tiny80_model), quantize="int4", threads=1, cache_dir=str(tmp_path))
    ours, mlas = load_model(settings), load_model(dataclasses.replace(settings, int4_kernel="mlas"))
    assert "phils' AVX-512 VNNI kernels" in ours.dtype and "ONNX Runtime's kernels" in mlas.dtype
    ops = {}
    for built in (tmp_path / "onnx-int4").iterdir():
        ops["-kernels" in built.name] = {n.op_type for n in onnx.load(str(built / "model.onnx"),
                                                                          load_external_data=False).graph.node}
    assert {"Q4MatMul", "Q8MatMul", "AttentionF16"} <= ops[True]  # Q8MatMul: the 8-bit head
    assert not {"GroupQueryAttention", "MatMulNBits"} & ops[True]
    assert not {"Q4MatMul", "Q8MatMul", "AttentionF16"} & ops[False]
    assert ours.runtime.new_kv(0).nbytes * 2 == mlas.runtime.new_kv(0).nbytes  # fp16 keys and values
    ids = ours.tokenizer("def add(a, b):\n    return a + b\n").input_ids
    a = ours.runtime.forward(ids, ours.runtime.new_kv(0), keep=len(ids))
    b = mlas.runtime.forward(ids, mlas.runtime.new_kv(0), keep=len(ids))
    assert float((a - b).abs().max()) <= 0.05 * float(b.abs().max())
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9


def test_without_the_kernel_int4_stays_on_mlas(tiny80_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a compiler that fails: the load must not
    library = None if UNAVAILABLE else q4_kernel.library(tmp_path / "no-compiler")
    assert library is None
    monkeypatch.setattr(q4_kernel, "unavailable_reason", lambda: "the CPU lacks avx512_vnni")
    loaded = load_model(EngineSettings(model=str(tiny80_model), quantize="int4", threads=1, cache_dir=str(tmp_path)))
    assert "ONNX Runtime's kernels" in loaded.dtype
    (built,) = (tmp_path / "onnx-int4").iterdir()
    assert "-kernels" not in built.name


def _attention_session(op: str, heads: int, kv_heads: int, width: int, cos, sin, library: Path | None):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    cache = TensorProto.FLOAT16 if op == "AttentionF16" else TensorProto.FLOAT
    extra = {"do_rotary": 1, "rotary_interleaved": 0} if op == "GroupQueryAttention" else {}
    node = helper.make_node(op, ["qkv", "", "", "pk", "pv", "seqlens", "total", "cos", "sin"], ["out", "k", "v"],
                            domain=q4_kernel.DOMAIN if op == "AttentionF16" else "com.microsoft",
                            num_heads=heads, kv_num_heads=kv_heads, scale=0.0, **extra)
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node], "g",
        [value("qkv", TensorProto.FLOAT, [1, None, width]), value("pk", cache, None), value("pv", cache, None),
         value("seqlens", TensorProto.INT32, [1]), value("total", TensorProto.INT32, [])],
        [value("out", TensorProto.FLOAT, None), value("k", cache, None), value("v", cache, None)],
        [numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin, "sin")])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # the reference's inferred present shape is not the one it writes
    if library is not None:
        options.register_custom_ops_library(str(library))
    domain = helper.make_opsetid(node.domain, 1)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), domain])
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@needs_kernel
@pytest.mark.parametrize("heads, kv_heads, size, rotary, past, new", [
    (4, 4, 80, 32, 10, 1),  # Phi-2's head: partial rotary, one token on a cache
    (4, 4, 80, 32, 10, 5),  # a few tokens on a cache
    (4, 4, 80, 32, 0, 7),  # a fresh prompt
    (8, 2, 64, 64, 33, 3),  # grouped heads (SmolLM2, Llama)
    (4, 1, 256, 256, 20, 2),  # one key/value head, a wide head
])
def test_our_attention_gives_what_group_query_attention_gives(tmp_path, heads, kv_heads, size, rotary, past, new):
    library = q4_kernel.library(tmp_path)
    rng = np.random.default_rng(3)
    capacity = 64
    frequencies = np.outer(np.arange(capacity), 1.0 / (10000 ** (np.arange(0, rotary, 2) / rotary))).astype(np.float32)
    cos, sin = np.cos(frequencies), np.sin(frequencies)
    width = (heads + 2 * kv_heads) * size
    qkv = rng.standard_normal((1, new, width)).astype(np.float32)
    keys, values = (rng.standard_normal((1, kv_heads, past, size)).astype(np.float32) for _ in range(2))
    lengths = {"seqlens": np.array([past + new - 1], np.int32), "total": np.array(past + new, np.int32)}
    expected = _attention_session("GroupQueryAttention", heads, kv_heads, width, cos, sin, None).run(
        None, {"qkv": qkv, "pk": keys, "pv": values, **lengths})
    # Ours holds the whole window in fp16 and writes the new tokens' keys and values in place.
    window_k, window_v = (np.zeros((1, kv_heads, capacity, size), np.float16) for _ in range(2))
    window_k[:, :, :past], window_v[:, :, :past] = keys, values
    got = _attention_session("AttentionF16", heads, kv_heads, width, cos, sin, library).run(
        None, {"qkv": qkv, "pk": window_k, "pv": window_v, **lengths})
    assert got[0].shape == expected[0].shape
    for ours, theirs in zip(got, expected):
        ours = ours[:, :, : past + new] if ours.ndim == 4 else ours
        assert np.abs(ours.astype(np.float32) - theirs).max() <= 2e-3 * np.abs(theirs).max()
    assert not got[1][:, :, past + new:].any()  # nothing written past the new tokens


@needs_kernel
def test_a_kernel_library_the_runtime_refuses_falls_back_to_onnx_runtimes_operators(tiny80_model, tmp_path, monkeypatch):
    broken = tmp_path / "phils-q4-broken.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(q4_kernel, "library", lambda cache: broken)
    loaded = load_model(EngineSettings(model=str(tiny80_model), quantize="int4", threads=1, cache_dir=str(tmp_path)))
    assert "ONNX Runtime's kernels" in loaded.dtype
    ids = loaded.tokenizer("def add(a, b):").input_ids
    assert loaded.runtime.forward(ids, loaded.runtime.new_kv(0)).isfinite().all()
