"""Build a 4-bit ONNX model for ONNX Runtime GenAI from a transformers checkpoint, one matrix at a time.

onnxruntime-genai's builder emits every MatMul in fp32 and quantizes the
whole graph at the end, through an fp32 protobuf copy of it: Phi-2's shape
peaked at 21.6 GB for a 2.2 GB result. Here each MatMul is quantized the
moment the builder emits it (the same MLAS block quantizer, the same node
and tensor names, so the file is the one the builder would write), and the
checkpoint's pages read so far are handed back to the kernel at once; the
build holds the 4-bit result and about one fp32 matrix at a time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ...config import INT4_GGUF
from ..errors import ModelLoadError
from . import q4_kernel
from .gguf_blocks import Blocks, GgufBlocks
from .gptq_blocks import GptqBlocks
from .int4_quant import quantize_blocks
from .mapping import checkpoint_ranges, drop_mapped

log = logging.getLogger(__name__)

BLOCK_SIZE = 32  # weights per scale: the builder's CPU default (llama.cpp's q4_0 uses 32 too)
ACCURACY_LEVEL = 4  # int8 activations in MLAS' kernels: the fast CPU path
HEADS = ("int4", "int8", "fp32")  # the output head's weights; the body is int4
HEAD = "int8"
# Zero points per block: as fast (Phi-2's shape, 68 against 71 ms/token at 1 500 tokens) and closer to
# the full-precision model (Gemma 3 270M, 600 positions of code: next-token agreement 0.692 against
# 0.658, KL 0.41 against 0.63). Blocks of 16 were closer still (0.763, KL 0.25) but 1.33x slower.
SYMMETRIC = False
# Each block's range searched for the least squared error (int4_quant) rather than its full range: the same
# file layout and speed, closer to full precision (600 positions of code, next-token agreement / KL vs fp32):
#   Gemma 3 270M: blocks of 32 0.692 / 0.405 -> 0.732 / 0.346 (torch int8: 0.64 / 0.73)
#   SmolLM2-135M: blocks of 32 0.723 / 0.280 -> 0.752 / 0.252 (torch int8: 0.488 / 1.13)
# Both models ship 4-bit in blocks of 32 (Q4_K_M, Q4_1), which flatters blocks of 32 here. Blocks of 128
# (engine.int4_block) decode Phi-2's shape ~17 % faster but lose much on Gemma (infill eval lines 11 of 127
# against 27 with blocks of 32, HumanEval first 40 1 against 2). The search costs build time: Phi-2's shape
# 92 s against 30 s.
CLIP_SEARCH = True
BUILD_RECORD = "phils-build.json"


def variant_name(block_size: int, head: str, kernel: bool = False, gguf: str = "requantize", gptq: bool = False) -> str:
    """How this version names a build in the cache: everything the file depends on besides the weights."""
    own = ("-gptq" if gptq else f"-gguf-{gguf}" if gguf != "requantize" else "") if kernel else ""
    return (f"b{block_size}-a{ACCURACY_LEVEL}-{'sym' if SYMMETRIC else 'asym'}{'-clip' if CLIP_SEARCH else ''}"
            f"-head-{head}{'-kernels-q8' if kernel else ''}-lk{own}")  # lk: logits kept on demand


def drop_stale_builds(root: Path, stem: str, block_sizes: tuple[int, ...]) -> list[Path]:
    """Remove the builds of ``stem`` (a checkpoint and its weights' key) this version would never load.

    A build made by an older version under another variant name (2.2 GB for
    Phi-2) would otherwise stay on disk beside its replacement; the variants
    a setting can still ask for (other blocks or heads) stay.
    """
    current = {variant_name(block, head, kernel, gguf, gptq) for block in block_sizes for head in HEADS
               for kernel in (False, True) for gguf in INT4_GGUF for gptq in (False, True)}
    dropped = []
    for path in root.glob(f"{stem}-*"):
        variant = path.name[len(stem) + 1:]
        if path.is_dir() and variant not in current and ".partial-" not in variant:
            shutil.rmtree(path, ignore_errors=True)
            dropped.append(path)
    return dropped


def build_int4(checkpoint: str | Path, target: Path, block_size: int = BLOCK_SIZE,
               accuracy_level: int = ACCURACY_LEVEL, head: str = HEAD, symmetric: bool = SYMMETRIC,
               clip_search: bool = CLIP_SEARCH, kernel: bool = False, gguf: Path | None = None,
               gguf_mode: str = "keep", gptq: Path | None = None) -> dict[str, Any]:
    """Write the 4-bit ONNX model of the transformers checkpoint directory ``checkpoint`` to ``target``.

    ``gguf``: the GGUF file ``checkpoint`` was dequantized from; with ``kernel``, its own 4-bit
    blocks are used as they are (``gguf_blocks``), and with ``gguf_mode`` "keep" the matrices it
    stores wider than 4 bits are 8-bit.

    ``gptq``: the GPTQ checkpoint ``checkpoint`` was dequantized from (``gptq_blocks``); with
    ``kernel``, its 4-bit blocks are used as they are (act-order's channels reordered), and an
    8-bit checkpoint's matrices are 8-bit.

    ``kernel``: the 4-bit matrices the kernel can run are ``phils.Q4MatMul``
    nodes (``q4_kernel``), in its layout, the others stay MatMulNBits; and
    where every attention node allows it, they are ``phils.AttentionF16``
    over an fp16 key/value cache.

    The build runs in a child process: its memory goes back to the system when
    it ends, and the builder's prints never reach this process's stdout. Returns
    what the child recorded in ``target/phils-build.json`` (its peak memory).
    """
    if importlib.util.find_spec("onnxruntime_genai") is None or importlib.util.find_spec("onnx_ir") is None:
        raise ModelLoadError("engine.quantize = int4 needs ONNX Runtime GenAI and its model builder: "
                             "pip install 'phils[int4]'")
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", __name__, str(checkpoint), str(partial), str(block_size), str(accuracy_level), head,
               "symmetric" if symmetric else "asymmetric", "clip-search" if clip_search else "rtn",
               "q4-kernel" if kernel else "matmulnbits",
               str(gptq or gguf) if kernel and (gptq or gguf and gguf_mode != "requantize") else "",
               "keep" if gptq else gguf_mode]
    child = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, errors="replace")
    if child.returncode != 0 or not (partial / BUILD_RECORD).is_file():
        shutil.rmtree(partial, ignore_errors=True)
        lines = [line for line in child.stdout.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {child.returncode}"
        log.debug("the ONNX build said:\n%s", "\n".join(lines[-40:]))
        raise ModelLoadError(f"cannot build the 4-bit ONNX model of {checkpoint}: {reason}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(target)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / BUILD_RECORD).is_file():  # else another process built it meanwhile: use theirs
            raise ModelLoadError(f"cannot write the 4-bit ONNX model to {target}: {exc}") from exc
    return json.loads((target / BUILD_RECORD).read_text())


def _build_here(checkpoint: str, target: str, block_size: int, accuracy_level: int, head: str,
                symmetric: bool, clip_search: bool, kernel: bool, gguf: str = "", gguf_mode: str = "keep") -> None:
    from onnxruntime_genai.models import builder

    started = time.monotonic()
    own: GgufBlocks | GptqBlocks | None = None
    gptq = bool(gguf) and Path(gguf).is_dir()  # a GPTQ checkpoint's directory, else a GGUF file
    if gguf:
        try:
            own = GptqBlocks(gguf) if gptq else GgufBlocks(gguf)
        except Exception as exc:  # the blocks are a refinement: a file that cannot be read still builds
            log.warning("cannot read the 4-bit blocks of %s (%s): its weights are quantized again", gguf, exc)
    kind = "gptq" if isinstance(own, GptqBlocks) else "gguf"
    counts = {"rows_kept": 0, "rows_quantized": 0, "rows_8bit": 0}
    cache = str(Path(target) / "cache")
    # A tied output head stays its own matrix (the embeddings a plain Gather): the head's precision is ours to set.
    options = [f"block_size={block_size}", f"accuracy_level={accuracy_level}", "shared_embeddings=false",
               f"is_symmetric={'true' if symmetric else 'false'}"]
    with _quantize_as_emitted(head, clip_search, kernel, own, counts, keep_wider=gguf_mode == "keep"):
        extra = builder.parse_extra_options(None, checkpoint, target, "int4", "cpu", cache, options)
        builder.create_model(None, checkpoint, target, "int4", "cpu", cache, **extra)
    shutil.rmtree(cache, ignore_errors=True)
    kv_fp16 = kernel and _attention_on_kernel(Path(target) / "model.onnx")
    logits_on_demand = _head_on_the_last_rows(Path(target) / "model.onnx", kernel)
    # A GPTQ checkpoint is built from a temporary dequantized copy: the source to name is the checkpoint.
    source = gguf if gptq else checkpoint
    record = {"source": str(Path(source).resolve()), "block_size": block_size, "accuracy_level": accuracy_level,
              "head": head, "symmetric": symmetric, "clip_search": clip_search, "kernel": kernel, "kv_fp16": kv_fp16,
              "logits_on_demand": logits_on_demand,
              kind: gguf if own else None,
              f"{kind}_mode": gguf_mode if own else None,
              **({f"rows_from_{kind}": counts.pop("rows_kept"), **counts} if own else {}),
              "seconds": round(time.monotonic() - started, 1),
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    (Path(target) / BUILD_RECORD).write_text(json.dumps(record, indent=2))


# GroupQueryAttention as onnxruntime-genai writes it for a CPU model, which phils.AttentionF16 reproduces.
ATTENTION_DEFAULTS = {"do_rotary": 1, "rotary_interleaved": 0, "local_window_size": -1, "softcap": 0.0,
                      "smooth_softmax": 0, "qk_output": 0}
ATTENTION_INPUTS = 9  # packed query, (key, value), past key and value, seqlens_k, total length, cos and sin caches


def _attention_on_kernel(path: Path) -> bool:
    """Swap every GroupQueryAttention for phils.AttentionF16 and make the cache fp16, if all of them allow it."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    nodes = [node for node in model.graph.node if node.op_type == "GroupQueryAttention"]
    initializers = {tensor.name for tensor in model.graph.initializer}
    for node in nodes:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if any(attributes.get(name, default) != default for name, default in ATTENTION_DEFAULTS.items()):
            return False
        inputs = list(node.input) + [""] * ATTENTION_INPUTS
        if inputs[1] or inputs[2] or any(inputs[ATTENTION_INPUTS:]) or not {inputs[7], inputs[8]} <= initializers:
            return False
    if not nodes:
        return False
    for node in nodes:
        kept = [a for a in node.attribute if a.name in ("num_heads", "kv_num_heads", "scale")]
        node.op_type, node.domain = "AttentionF16", q4_kernel.DOMAIN
        del node.attribute[:]
        node.attribute.extend(kept)
        del node.input[ATTENTION_INPUTS:]
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    if not any(o.domain == q4_kernel.DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(q4_kernel.DOMAIN, 1))
    onnx.save(model, str(path))
    return True


LOGITS_TO_KEEP = "num_logits_to_keep"  # the name GenAI fills with 0 (every row) when the caller sets nothing


def _head_on_the_last_rows(path: Path, kernel: bool) -> bool:
    """Run the output head on the last ``num_logits_to_keep`` rows only (0: all).

    A prompt's prefill needs the last row's logits, yet the head ran on every row: Qwen2.5-Coder 1.5B's
    head (1536 x 151936) was 15 % of its prefill. The logits keep their [batch, tokens, vocab] shape,
    because GenAI binds a buffer of that shape: with ``kernel`` ``phils.LastRows`` writes only the rows
    computed (ONNX Runtime's Pad writing zeros before them took 7 % of the prefill), else Pad.
    ``runtime_genai`` sets the count before each run.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    heads = [node for node in graph.node if "logits" in node.output]
    if len(heads) != 1 or any(value.name == LOGITS_TO_KEEP for value in graph.input):
        return False
    head = heads[0]
    hidden, rows = head.input[0], "/phils/head_rows"
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    nodes = [  # constants as nodes: the initializers stay the builder's
        helper.make_node("Constant", [], [name], name=name + "_constant",
                         value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        for name, values in (("/phils/end", [2**62]), ("/phils/axis", [1]), ("/phils/zero", [0]),
                             ("/phils/zeros", [0, 0, 0, 0]))
    ] + [
        helper.make_node("Neg", [LOGITS_TO_KEEP], ["/phils/start"], name="/phils/Neg"),
        helper.make_node("Slice", [hidden, "/phils/start", "/phils/end", "/phils/axis"], [rows], name="/phils/Slice"),
    ]
    head.input[0] = rows
    head.output[0] = "/phils/kept_logits"
    after = [helper.make_node("LastRows", ["/phils/kept_logits", hidden], ["logits"], name="/phils/LastRows",
                              domain=q4_kernel.DOMAIN)] if kernel else [
        helper.make_node("Shape", [hidden], ["/phils/tokens"], name="/phils/Tokens", start=1, end=2),
        helper.make_node("Shape", ["/phils/kept_logits"], ["/phils/kept"], name="/phils/Kept", start=1, end=2),
        helper.make_node("Sub", ["/phils/tokens", "/phils/kept"], ["/phils/missing"], name="/phils/Missing"),
        helper.make_node("Concat", ["/phils/zero", "/phils/missing", "/phils/zeros"], ["/phils/pads"], name="/phils/Pads",
                         axis=0),
        helper.make_node("Pad", ["/phils/kept_logits", "/phils/pads"], ["logits"], name="/phils/Pad", mode="constant"),
    ]
    at = list(graph.node).index(head)
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)
    at = list(graph.node).index(head) + 1
    for offset, node in enumerate(after):
        graph.node.insert(at + offset, node)
    if kernel and not any(o.domain == q4_kernel.DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(q4_kernel.DOMAIN, 1))
    onnx.save(model, str(path))
    return True


@contextlib.contextmanager
def _quantize_as_emitted(head: str, clip_search: bool, kernel: bool = False, own: GgufBlocks | GptqBlocks | None = None,
                         counts: dict[str, int] | None = None, keep_wider: bool = False) -> Iterator[None]:
    from onnxruntime_genai.models import builder

    Model = builder.Model  # the builder imports its modules top-level ("builders.base"): patch the class it uses
    emit_float, whole_graph, init = Model.make_matmul_float, Model.to_nbits, Model.__init__

    left_float: set[str] = set()

    def make_matmul_float(self: Any, matmul: Any, name: str, root_input: str, **kwargs: Any) -> str:
        is_head = bool(kwargs.get("logits")) or name == "/lm_head/MatMul"
        if not _quantizing(self) or name in self.quant_attrs.get("nodes_to_exclude", ()):
            return emit_float(self, matmul, name, root_input, **kwargs)
        if is_head and head == "fp32":
            left_float.add(name)
            return emit_float(self, matmul, name, root_input, **kwargs)
        bits = 8 if is_head and head == "int8" else 4
        if bits == 4 and own is not None and keep_wider:  # a matrix the GGUF stores wider than 4 bits: 8 bits
            import torch

            wider = own.wider(matmul.weight.detach().to(torch.float32).numpy())
            if wider:
                bits = 8
                if counts is not None:
                    counts["rows_8bit"] += int(matmul.weight.shape[0])
        _emit_nbits(self, matmul.weight, name, root_input, kwargs, bits=bits,
                    clip_search=clip_search, kernel=kernel, own=own, counts=counts)
        drop_mapped(checkpoint_ranges())  # q, k and v were read to fuse them: drop theirs too
        return name

    def to_nbits(self: Any) -> Any:
        if any(node.op_type == "MatMul" and node.name not in left_float and node.inputs[1] is not None
               and node.inputs[1].const_value is not None for node in self.model.graph):
            return whole_graph(self)  # something this module did not emit (e.g. an excluded node): the builder's way
        return self.model

    def read_config(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        # transformers 5 writes the RoPE settings of models with sliding-window layers (Gemma 3) per layer
        # type; the builder reads one set, and the local layers' base frequency under its old name.
        rope = getattr(config, "rope_parameters", None)
        if isinstance(rope, dict) and isinstance(rope.get("full_attention"), dict):
            config.rope_local_base_freq = (rope.get("sliding_attention") or {}).get("rope_theta", 10000.0)
            config.rope_parameters = rope["full_attention"]
        init(self, config, *args, **kwargs)

    Model.make_matmul_float, Model.to_nbits, Model.__init__ = make_matmul_float, to_nbits, read_config
    try:
        yield
    finally:
        Model.make_matmul_float, Model.to_nbits, Model.__init__ = emit_float, whole_graph, init


def _quantizing(model: Any) -> bool:
    import onnx_ir as ir

    return (model.onnx_dtype in {ir.DataType.INT4, ir.DataType.UINT4}
            and not model.quant_attrs.get("use_qdq") and model.quant_attrs.get("bits", 4) == 4)


def _emit_nbits(model: Any, weight: Any, name: str, root_input: str, kwargs: dict[str, Any], bits: int,
                clip_search: bool = False, kernel: bool = False, own: GgufBlocks | GptqBlocks | None = None,
                counts: dict[str, int] | None = None) -> None:
    """A MatMulNBits node for ``root_input @ weight.T``, named as onnxruntime's quantizer names it.

    With ``kernel``, a ``phils.Q4MatMul`` node where our kernel can run the matrix (same quantized
    values, its layout); with ``own`` too, the rows a GGUF file or GPTQ checkpoint holds in 4 bits keep
    its blocks, in their input-channel order (the kernel reads the activations in that order).
    """
    import numpy as np
    import torch
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    attrs = model.quant_attrs
    block_size, symmetric = int(attrs["matmul_block_size"]), bool(attrs["is_symmetric"])

    def quantized(matrix: Any) -> tuple[Any, Any, Any]:
        """MatMulNBits' tensors of ``matrix`` [K, N]."""
        if bits == 4 and clip_search:
            return quantize_blocks(matrix, block_size, symmetric)
        config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric,
                                              accuracy_level=attrs["accuracy_level"], bits=bits)
        return DefaultWeightOnlyQuantizer(config).qbits_block_quant(matrix)

    with torch.no_grad():
        dense = weight.detach().to(torch.float32).numpy()  # [N, K]
    rows, cols = dense.shape[1], dense.shape[0]
    tensor = name[1:].replace("/", ".") + ".weight"
    output = "logits" if kwargs.get("logits", False) else f"{name}/output_0"
    if kernel and bits == 8 and q4_kernel.fits(rows, cols, block_size, bits, symmetric):
        tensors = dict(zip(("_Q8K", "_Q8K_scales", "_Q8K_zero_points"),
                           q4_kernel.layout8(*quantized(np.ascontiguousarray(dense.T)), rows, cols)))
        _kernel_node(model, 8, tensors, tensor, root_input, output, name, rows, cols)
    elif kernel and bits == 4 and q4_kernel.fits(rows, cols, block_size, bits, symmetric):
        # The rows a GGUF file holds in 4 bits keep its blocks; only the others are quantized (each
        # output row's blocks are quantized on their own, so the rest come out as they would in the whole).
        found, blocks = own.find(dense) if own is not None else (np.zeros(cols, dtype=bool), Blocks.zeros(cols, rows))
        rest = ~found
        if rest.any():  # in the found rows' channel order: one order for the whole matrix
            source = dense[rest] if blocks.perm is None else dense[rest][:, blocks.perm]
            blocks.codes[rest], blocks.scale[rest], blocks.offset[rest] = q4_kernel.blocks_of(
                *quantized(np.ascontiguousarray(source.T)), rows, int(rest.sum()))
        if counts is not None and own is not None:
            counts["rows_kept"] += int(found.sum())
            counts["rows_quantized"] += int(rest.sum())
        tensors = dict(zip(("_Q4K", "_Q4K_scales", "_Q4K_zero_scales"),
                           q4_kernel.layout(blocks.codes, blocks.scale, blocks.offset, rows, cols)))
        if blocks.perm is not None:  # the kernel reads the activations in the blocks' channel order
            tensors["_Q4K_perm"] = blocks.perm.astype(np.int32)
        _kernel_node(model, 4, tensors, tensor, root_input, output, name, rows, cols)
    else:
        packed, scales, zero_points = quantized(np.ascontiguousarray(dense.T))
        inputs = [root_input, tensor + f"_Q{bits}", tensor + "_scales"]
        model.make_initializer(packed, tensor + f"_Q{bits}")
        model.make_initializer(scales.astype(np.float32), tensor + "_scales")
        if not symmetric:
            model.make_initializer(zero_points, tensor + "_zero_points")
            inputs.append(tensor + "_zero_points")
        extra = {"accuracy_level": attrs["accuracy_level"]} if attrs["accuracy_level"] else {}
        model.make_node("MatMulNBits", inputs=inputs, outputs=[output], name=name + f"_Q{bits}", domain="com.microsoft",
                        K=rows, N=cols, bits=bits, block_size=block_size, **extra)
    model.make_value(output, model.io_dtype, shape=model.make_hidden_state_shape(seq_dim=kwargs.get("seq_dim", "sequence_length"), last_dim=cols))


def _kernel_node(model: Any, bits: int, tensors: dict[str, Any], tensor: str, root_input: str, output: str, name: str,
                 rows: int, cols: int) -> None:
    """phils' ``Q{bits}MatMul`` node reading ``tensors`` (initializers named ``tensor`` + each key)."""
    for suffix, values in tensors.items():
        model.make_initializer(values, tensor + suffix)
    model.graph.opset_imports[q4_kernel.DOMAIN] = 1
    model.make_node(f"Q{bits}MatMul", inputs=[root_input, *(tensor + suffix for suffix in tensors)], outputs=[output],
                    name=name + f"_Q{bits}K", domain=q4_kernel.DOMAIN, K=rows, N=cols)


if __name__ == "__main__":  # the child process build_int4 starts
    _build_here(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == "symmetric",
                sys.argv[7] == "clip-search", sys.argv[8] == "q4-kernel", sys.argv[9], sys.argv[10])
