"""One sitting: a 4-bit matrix x vector kernel of our own against ONNX Runtime's MatMulNBits (and OpenVINO's).

    .venv/bin/python scripts/bench-q4-kernel.py

Issue 13 asks whether a 4-bit kernel with fewer instructions per block would
let the int4 runtime reach half of int8's keystroke time. This compiles
bench/kernels/q4_gemv.c for this machine (gcc, AVX-512 VNNI), checks it
against numpy, and times it against MatMulNBits (blocks of 32, zero points,
accuracy level 4: what the cpu-int4 profile runs) on the same 24 random
matrices of Phi-2's MLP shape (so that the last-level cache cannot hold them),
with 1 and 8 tokens, beside the machine's streaming read bandwidth. OpenVINO's
int4 FullyConnected joins when `openvino` is installed. Writes
bench/results/q4-kernel.{md,json}. Not part of the tests.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
SHAPES = ((10240, 2560), (2560, 10240))  # (N, K): fc1 and fc2 of Phi-2
MATRICES = 24
REPEATS = 10
rng = np.random.default_rng(0)


def compile_kernel(out: Path) -> ctypes.CDLL:
    lib = out / "libq4gemv.so"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(lib),
                    str(ROOT / "bench/kernels/q4_gemv.c")], check=True)
    kernel = ctypes.CDLL(str(lib))
    p, i = ctypes.c_void_p, ctypes.c_int
    kernel.q4_matmul.argtypes = [p, p, p, p, p, p, i, i, i, p, p, p]
    return kernel


def random_weights(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = rng.integers(0, 16, (n, k), dtype=np.uint8)
    zero = rng.integers(0, 16, (n, k // 32), dtype=np.uint8)
    scale = rng.random((n, k // 32), dtype=np.float32) * 0.02 + 0.001
    return q, zero, scale


def ours_layout(q: np.ndarray, zero: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, ...]:
    n, k = q.shape
    groups, blocks = n // 16, k // 32
    q6 = q.reshape(groups, 16, blocks, 4, 2, 4).transpose(0, 2, 3, 1, 4, 5)  # group, block, chunk, row, nibble, j
    packed = np.ascontiguousarray(q6[..., 0, :] | (q6[..., 1, :] << 4))
    scales = np.ascontiguousarray(scale.astype(np.float16).reshape(groups, 16, blocks).transpose(0, 2, 1))
    zeros = np.ascontiguousarray((zero * scale).astype(np.float16).reshape(groups, 16, blocks).transpose(0, 2, 1))
    return packed, scales, zeros


class Ours:
    def __init__(self, kernel: ctypes.CDLL, weights: list) -> None:
        self.kernel, self.layouts = kernel, [ours_layout(*w) for w in weights]
        self.shapes = [w[0].shape for w in weights]

    def run(self, index: int, x: np.ndarray) -> np.ndarray:
        packed, scales, zeros = self.layouts[index]
        n, k = self.shapes[index]
        m = x.shape[0]
        y = np.empty((m, n), np.float32)
        xq, sx, ss = np.empty((m, k), np.int8), np.empty((m, k // 32), np.float32), np.empty((m, k // 32), np.float32)
        self.kernel.q4_matmul(packed.ctypes.data, scales.ctypes.data, zeros.ctypes.data, None, x.ctypes.data,
                              y.ctypes.data, m, n, k, xq.ctypes.data, sx.ctypes.data, ss.ctypes.data)
        return y


def mlas_session(weights: list, folder: Path):
    """One session holding every matrix (sessions of their own would each start a spinning thread pool)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    nodes, inits = [], []
    for index, (q, zero, scale) in enumerate(weights):
        n, k = q.shape
        inits += [numpy_helper.from_array((q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, k // 32, 16), f"B{index}"),
                  numpy_helper.from_array(scale.reshape(-1), f"S{index}"),
                  numpy_helper.from_array((zero[:, 0::2] | (zero[:, 1::2] << 4)).reshape(-1), f"Z{index}")]
        nodes.append(helper.make_node("MatMulNBits", [f"x{k}", f"B{index}", f"S{index}", f"Z{index}"], [f"y{index}"],
                                      domain="com.microsoft", K=k, N=n, bits=4, block_size=32, accuracy_level=4))
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, ["M", k]) for _, k in SHAPES]
    outputs = [helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, ["M", w[0].shape[0]])
               for index, w in enumerate(weights)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path = folder / "matmulnbits.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="matmulnbits.data")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_models(weights: list) -> list | None:
    try:
        import openvino as ov
        from openvino import opset13 as op
    except ImportError:
        return None
    compiled = []
    for q, zero, scale in weights:
        n, k = q.shape
        packed = ov.Tensor(ov.Type.u4, [n, k // 32, 32])
        packed.data.view(np.uint8).reshape(-1)[:] = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1)
        zeros = ov.Tensor(ov.Type.u4, [n, k // 32, 1])
        zeros.data.view(np.uint8).reshape(-1)[:] = (zero.reshape(-1)[0::2] | (zero.reshape(-1)[1::2] << 4))
        weight = op.multiply(op.subtract(op.convert(op.constant(packed), "f16"), op.convert(op.constant(zeros), "f16")),
                             op.constant(scale.astype(np.float16).reshape(n, k // 32, 1)))
        weight = op.convert(op.reshape(weight, op.constant(np.array([n, k], np.int64)), False), "f32")
        x = op.parameter([-1, k], ov.Type.f32, name="x")
        model = ov.Model([op.result(op.matmul(x, weight, False, True))], [x])
        compiled.append(ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1,
                                                               "PERFORMANCE_HINT": "LATENCY",
                                                               "INFERENCE_PRECISION_HINT": "f32"}))
    return compiled


def per_matrix_ms(one_pass) -> float:
    """Median over REPEATS of one pass over all matrices, per matrix."""
    one_pass()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000 / MATRICES


def each(call, inputs: dict[int, np.ndarray]):
    return lambda: [call(index, inputs[SHAPES[index % 2][1]]) for index in range(MATRICES)]


def streaming_read_gbs() -> float:
    import torch

    torch.set_num_threads(THREADS)
    x = torch.ones(2**28)  # 1 GiB
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        torch.sum(x)
        best = max(best, x.nbytes / (time.perf_counter() - started) / 1e9)
    return best


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    with tempfile.TemporaryDirectory(prefix="phils-q4-") as scratch:
        folder = Path(scratch)
        kernel = compile_kernel(folder)
        weights = [random_weights(*SHAPES[index % 2]) for index in range(MATRICES)]
        ours = Ours(kernel, weights)
        # Numerics: both against the dequantized weights in float64.
        q, zero, scale = weights[0]
        x = rng.standard_normal((3, q.shape[1])).astype(np.float32)
        exact = x.astype(np.float64) @ ((q.astype(np.float64) - zero.repeat(32, 1)) * scale.repeat(32, 1)).T
        mlas = mlas_session(weights, folder)
        error = {"ours": float(np.abs(ours.run(0, x) - exact).max() / np.abs(exact).max()),
                 "MatMulNBits": float(np.abs(mlas.run(["y0"], {"x2560": x, "x10240": np.zeros((3, 10240), np.float32)})[0]
                                        - exact).max() / np.abs(exact).max())}
        ov_models = openvino_models(weights)
        rows = []
        for tokens in (1, 8):
            inputs = {k: rng.standard_normal((tokens, k)).astype(np.float32) for _, k in SHAPES}
            row = {"tokens": tokens,
                   "MatMulNBits (ONNX Runtime, MLAS)": per_matrix_ms(
                       lambda: mlas.run(None, {f"x{k}": v for k, v in inputs.items()})),
                   "ours (bench/kernels/q4_gemv.c)": per_matrix_ms(each(ours.run, inputs))}
            if ov_models is not None:
                requests = [model.create_infer_request() for model in ov_models]
                row["OpenVINO FullyConnectedCompressed"] = per_matrix_ms(each(lambda i, v: requests[i].infer({0: v}), inputs))
            rows.append(row)
        bandwidth = streaming_read_gbs()
    matrix_bytes = {"MatMulNBits": 2560 * 10240 // 2 + 2560 * 10240 // 32 * 4 + 2560 * 10240 // 64,
                    "ours": 2560 * 10240 // 2 + 2560 * 10240 // 32 * 4}
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    report = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "threads": THREADS, "rows": rows,
              "relative_error_vs_float64": error, "streaming_read_gb_s": round(bandwidth, 1), "bytes_per_matrix": matrix_bytes}
    out = ROOT / "bench/results/q4-kernel"
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    names = list(rows[0])[1:]
    lines = ["# 4-bit kernels, one 2560x10240 matrix (Phi-2's fc1/fc2), ms per matrix", "",
             f"`{command}` on {report['date']}, {THREADS} threads, {MATRICES} distinct matrices per pass, median of "
             f"{REPEATS} passes. Streaming read bandwidth in the same sitting: {report['streaming_read_gb_s']} GB/s, so "
             f"the floor for MatMulNBits' {matrix_bytes['MatMulNBits'] / 1e6:.1f} MB is "
             f"{matrix_bytes['MatMulNBits'] / bandwidth / 1e6:.3f} ms and for ours ({matrix_bytes['ours'] / 1e6:.1f} MB) "
             f"{matrix_bytes['ours'] / bandwidth / 1e6:.3f} ms.", "",
             "| tokens | " + " | ".join(names) + " |", "| --- | " + " | ".join("---" for _ in names) + " |"]
    lines += [f"| {row['tokens']} | " + " | ".join(f"{row[name]:.3f}" for name in names) + " |" for row in rows]
    lines += ["", "Largest error against the dequantized weights in float64, relative to the largest output: "
              + ", ".join(f"{name} {value:.4f}" for name, value in error.items()) + "."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
