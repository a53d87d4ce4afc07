"""One sitting: phils' 4-bit matrix kernel against ONNX Runtime's MatMulNBits (and OpenVINO's), same weights.

    .venv/bin/python scripts/bench-q4-kernel.py

Times phils.Q4MatMul (engine/runtimes/kernels/q4_matmul.c, compiled as phils compiles
it) and MatMulNBits (blocks of 32, zero points, accuracy level 4: what the
int4 runtime runs without our kernel), each as one ONNX Runtime session over
the same 24 random matrices of Phi-2's MLP shape (so that the last-level
cache cannot hold them), with 1 and 8 tokens, beside the machine's streaming
read bandwidth, and checks both against the dequantized weights. OpenVINO's
int4 FullyConnected joins when `openvino` is installed. Writes
bench/results/q4-kernel.{md,json}. Not part of the tests.
"""

from __future__ import annotations

import json
import os
import shlex
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
# Token counts per call: one (decode), eight (drafts), a prefill chunk: `--tokens 1,8,256`.
TOKENS = tuple(int(t) for t in (sys.argv[sys.argv.index('--tokens') + 1] if '--tokens' in sys.argv else '1,8').split(','))
rng = np.random.default_rng(0)


def random_weights(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = rng.integers(0, 16, (n, k), dtype=np.uint8)
    zero = rng.integers(0, 16, (n, k // 32), dtype=np.uint8)
    scale = rng.random((n, k // 32), dtype=np.float32) * 0.02 + 0.001
    return q, zero, scale


def session(weights: list, folder: Path, library: Path | None):
    """One session holding every matrix (sessions of their own would each start a spinning thread pool).

    With ``library``: phils.Q4MatMul nodes on the repacked tensors, else MatMulNBits.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from phils.engine.runtimes import q4_kernel

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    if library is not None:
        options.register_custom_ops_library(str(library))
    nodes, inits = [], []
    for index, (q, zero, scale) in enumerate(weights):
        n, k = q.shape
        tensors = [(q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, k // 32, 16), scale.reshape(-1),
                   (zero[:, 0::2] | (zero[:, 1::2] << 4)).reshape(-1)]
        if library is not None:
            tensors = list(q4_kernel.repack(*tensors, k, n))
        inits += [numpy_helper.from_array(t, f"{name}{index}") for t, name in zip(tensors, "BSZ")]
        names = [f"x{k}", f"B{index}", f"S{index}", f"Z{index}"]
        if library is None:
            nodes.append(helper.make_node("MatMulNBits", names, [f"y{index}"], domain="com.microsoft", K=k, N=n, bits=4,
                                          block_size=32, accuracy_level=4))
        else:
            nodes.append(helper.make_node("Q4MatMul", names, [f"y{index}"], domain=q4_kernel.DOMAIN, K=k, N=n))
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, ["M", k]) for _, k in SHAPES]
    outputs = [helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, ["M", w[0].shape[0]])
               for index, w in enumerate(weights)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    domain = q4_kernel.DOMAIN if library is not None else "com.microsoft"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
    path = folder / f"{domain}.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location=f"{domain}.data")
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
    from phils.engine.runtimes import q4_kernel

    with tempfile.TemporaryDirectory(prefix="phils-q4-") as scratch:
        folder = Path(scratch)
        library = q4_kernel.library(folder)
        if library is None:
            raise SystemExit(f"phils' kernel cannot run here: {q4_kernel.unavailable_reason()}")
        weights = [random_weights(*SHAPES[index % 2]) for index in range(MATRICES)]
        # Numerics: both against the dequantized weights in float64.
        q, zero, scale = weights[0]
        x = rng.standard_normal((3, q.shape[1])).astype(np.float32)
        exact = x.astype(np.float64) @ ((q.astype(np.float64) - zero.repeat(32, 1)) * scale.repeat(32, 1)).T
        mlas, ours = session(weights, folder, None), session(weights, folder, library)
        feed = {"x2560": x, "x10240": np.zeros((3, 10240), np.float32)}
        error = {name: float(np.abs(run.run(["y0"], feed)[0] - exact).max() / np.abs(exact).max())
                 for name, run in (("phils.Q4MatMul", ours), ("MatMulNBits", mlas))}
        ov_models = openvino_models(weights)
        rows = []
        for tokens in TOKENS:
            inputs = {k: rng.standard_normal((tokens, k)).astype(np.float32) for _, k in SHAPES}
            row = {"tokens": tokens,
                   "MatMulNBits (ONNX Runtime, MLAS)": per_matrix_ms(
                       lambda: mlas.run(None, {f"x{k}": v for k, v in inputs.items()})),
                   "phils.Q4MatMul (engine/runtimes/kernels/q4_matmul.c)": per_matrix_ms(
                       lambda: ours.run(None, {f"x{k}": v for k, v in inputs.items()}))}
            if ov_models is not None:
                requests = [model.create_infer_request() for model in ov_models]
                row["OpenVINO FullyConnectedCompressed"] = per_matrix_ms(each(lambda i, v: requests[i].infer({0: v}), inputs))
            rows.append(row)
        bandwidth = streaming_read_gbs()
    matrix_bytes = {"MatMulNBits": 2560 * 10240 // 2 + 2560 * 10240 // 32 * 4 + 2560 * 10240 // 64,
                    "phils.Q4MatMul": 2560 * 10240 // 2 + 2560 * 10240 // 32 * 4}
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
             f"{matrix_bytes['MatMulNBits'] / bandwidth / 1e6:.3f} ms and for phils.Q4MatMul's "
             f"({matrix_bytes['phils.Q4MatMul'] / 1e6:.1f} MB) {matrix_bytes['phils.Q4MatMul'] / bandwidth / 1e6:.3f} ms.", "",
             "| tokens | " + " | ".join(names) + " |", "| --- | " + " | ".join("---" for _ in names) + " |"]
    lines += [f"| {row['tokens']} | " + " | ".join(f"{row[name]:.3f}" for name in names) + " |" for row in rows]
    lines += ["", "Largest error against the dequantized weights in float64, relative to the largest output: "
              + ", ".join(f"{name} {value:.4f}" for name, value in error.items()) + "."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
