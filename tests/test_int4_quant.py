"""The searched 4-bit block quantizer: onnxruntime's layout, its kernel's arithmetic, less error than rounding."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from onnxruntime.quantization.matmul_nbits_quantizer import (  # noqa: E402
    DefaultWeightOnlyQuantConfig,
    DefaultWeightOnlyQuantizer,
)

from phils.engine.runtimes.int4_quant import quantize_blocks  # noqa: E402


def _weights(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((rows, cols)) * 0.02
    matrix[rng.random((rows, cols)) < 0.002] *= 12  # a few outliers, as trained weights have
    return matrix.astype(np.float32)


def _dequantized(packed, scales, zero_points, rows, block_size):
    """[K, N] from MatMulNBits' layout, written independently of the quantizer."""
    cols, blocks, _ = packed.shape
    codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(cols, blocks, block_size).astype(np.float32)
    zeros = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(cols, -1)[:, :blocks].astype(np.float32)
    values = (codes - zeros[..., None]) * scales[..., None]
    return values.reshape(cols, blocks * block_size)[:, :rows].T


@pytest.mark.parametrize("rows,cols,block_size,symmetric", [
    (256, 96, 32, False), (256, 96, 32, True), (320, 40, 128, False), (200, 24, 32, False), (640, 64, 128, True)])
def test_without_the_search_it_is_onnxruntimes_quantizer(rows, cols, block_size, symmetric):
    matrix = _weights(rows, cols)
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, accuracy_level=4, bits=4)
    theirs = DefaultWeightOnlyQuantizer(config).qbits_block_quant(matrix)
    ours = quantize_blocks(matrix, block_size, symmetric, shrinks=(1.0,))
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])
    if not symmetric:
        assert np.array_equal(ours[2], theirs[2])


@pytest.mark.parametrize("block_size,symmetric", [(32, False), (128, False), (32, True)])
def test_the_search_never_rounds_worse_and_usually_better(block_size, symmetric):
    rows, cols = 576, 64  # 576 is not a multiple of 128: the padded last block too
    matrix = _weights(rows, cols, seed=1)
    plain = quantize_blocks(matrix, block_size, symmetric, shrinks=(1.0,))
    searched = quantize_blocks(matrix, block_size, symmetric)
    error = {name: (_dequantized(*q, rows, block_size) - matrix) ** 2 for name, q in (("plain", plain), ("searched", searched))}
    blocks = -(-rows // block_size)
    per_block = {name: np.pad(e, ((0, blocks * block_size - rows), (0, 0))).reshape(blocks, block_size, cols).sum(1)
                 for name, e in error.items()}
    assert (per_block["searched"] <= per_block["plain"] * (1 + 1e-5) + 1e-12).all()
    assert error["searched"].sum() < 0.97 * error["plain"].sum()


def test_onnxruntimes_kernel_computes_with_the_searched_weights():
    """The file layout, checked by the kernel that runs it: MatMulNBits(x, ours) equals x @ our dequantized W."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rows, cols, block_size = 320, 48, 128
    matrix = _weights(rows, cols, seed=2)
    packed, scales, zero_points = quantize_blocks(matrix, block_size)
    node = helper.make_node("MatMulNBits", ["x", "w", "s", "z"], ["y"], domain="com.microsoft",
                            K=rows, N=cols, bits=4, block_size=block_size)
    graph = helper.make_graph(
        [node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(packed, "w"), numpy_helper.from_array(scales, "s"),
         numpy_helper.from_array(zero_points, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((1, rows)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    expected = x @ _dequantized(packed, scales, zero_points, rows, block_size)
    assert np.allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(y, x @ matrix, rtol=1e-4, atol=1e-4)  # it is the quantized matrix that ran
