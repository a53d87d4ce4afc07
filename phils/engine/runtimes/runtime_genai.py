"""A 4-bit ONNX model run by ONNX Runtime GenAI on the CPU (``engine.quantize = "int4"``).

4-bit weights with int8 activations decode Phi-2's shape at about 25-40 ms a
token on this project's 2-core machine with phils' kernels (``q4_kernel``:
AVX-512 VNNI), 50-70 on ONNX Runtime's own, where torch's int8 takes 85-190.
A document's KV cache is a GenAI ``Generator``: ``append_tokens`` runs tokens and keeps their keys and values, ``rewind_to``
crops, which is all the prefix reuse, the decode loop and the judging of
mid-code candidates need; the logits come back as a torch tensor, so token
healing and candidate scoring work unchanged.

A generator holds its keys and values in one buffer for the whole window,
written in place (no copy mid-keystroke), and allocated in full: Phi-2's
shape costs 1.28 GB a document from the start in fp32, 0.64 GB in fp16 (phils'
attention), which is what the byte budget counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .int4_build import LOGITS_TO_KEEP
from .runtime_torch import token_ids


class GenaiKV:
    """One document's keys and values: a GenAI generator, with the cache interface the decode loop uses."""

    def __init__(self, generator: Any, nbytes: int, logits_to_keep: Any = None):
        self.generator = generator
        self.nbytes = nbytes
        # The graph's num_logits_to_keep, where the build has it: GenAI reads this array's memory at each run.
        self.logits_to_keep = logits_to_keep

    def get_seq_length(self) -> int:
        return int(self.generator.token_count())

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens (a negative count, as transformers' caches take)."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if tokens_to_remove:
            self.generator.rewind_to(max(self.get_seq_length() + tokens_to_remove, 0))


class GenaiRuntime:
    name = "onnxruntime-genai"
    device = "cpu"
    can_rewind = True  # rewind_to keeps every position's keys and values, sliding-window layers too
    # MLAS runs a one-token pass on another kernel path than a longer one, and the two round the int8
    # activations differently (logits apart by up to 1.07 on SmolLM2-135M, which flips close choices),
    # while longer passes agree exactly however the tokens are chunked. A fresh prompt is prefilled in
    # passes of many tokens, so a reused cache runs at least two for its answer to be the fresh one's.
    min_prefill = 2

    def __init__(self, directory: Path, threads: int, reserve_tokens: int, context_tokens: int = 0,
                 custom_ops: Path | None = None):
        try:
            import numpy
            import onnxruntime_genai as og
            import torch
        except ImportError as exc:
            raise ModelLoadError("engine.quantize = int4 needs ONNX Runtime GenAI: pip install 'phils[int4]'") from exc
        self._np, self._torch = numpy, torch
        described = json.loads((directory / "genai_config.json").read_text())["model"]
        context = int(described.get("context_length") or 2048)
        if context_tokens > 0:  # a generator allocates its whole length up front: what the engine uses, no more
            context = min(context, context_tokens + reserve_tokens)
        decoder = described["decoder"]
        # Room for what is judged after an answer (the code below the cursor) inside the model's window.
        self.window = max(context - reserve_tokens, 1)
        self.eos_ids = token_ids(described.get("eos_token_id"))
        self._pad_id = described.get("pad_token_id")
        per_token = 2 * int(decoder["num_hidden_layers"]) * int(decoder["num_key_value_heads"]) * int(decoder["head_size"])
        built = directory / "phils-build.json"  # int4_build's record: our attention keeps fp16 keys and values
        record = json.loads(built.read_text()) if built.is_file() else {}
        kv_fp16 = bool(record.get("kv_fp16"))
        self._logits_on_demand = bool(record.get("logits_on_demand"))  # the head runs on the rows asked for
        self._kv_bytes = per_token * (2 if kv_fp16 else 4) * context  # keys and values for the whole window
        overlay: dict[str, Any] = {"session_options": {}}
        if threads > 0:
            overlay["session_options"] = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        if custom_ops is not None:  # the library behind phils.Q4MatMul nodes (q4_kernel): compiled on this machine
            overlay["session_options"]["custom_ops_library"] = str(_beside_model(custom_ops, directory))
        if isinstance(decoder.get("sliding_window"), dict):
            # Sliding-window layers (Gemma 3) keep only their window plus a slack by default, and a generator
            # cannot rewind past what they dropped: every keystroke on a longer document prefilled it all
            # (Gemma 3 270M: 0 % reuse). Keeping every position resident makes rewinding always possible;
            # attention still sees only the window.
            overlay["sliding_window"] = {**decoder["sliding_window"], "cache_slack": context}
        config = og.Config(str(directory))
        if any(overlay.values()):
            config.overlay(json.dumps({"model": {"decoder": overlay}}))
        try:
            self.model = og.Model(config)
        except Exception as exc:  # onnxruntime raises its own kinds
            raise ModelLoadError(f"ONNX Runtime GenAI cannot load {directory}: {exc}") from exc
        self._og = og
        self._params = og.GeneratorParams(self.model)
        self._params.set_search_options(max_length=context, do_sample=False)

    def new_kv(self, reserve: int) -> GenaiKV:
        generator = self._og.Generator(self.model, self._params)
        keep = None
        if self._logits_on_demand:
            keep = self._np.zeros(1, dtype=self._np.int64)  # 0: every row
            generator.set_model_input(LOGITS_TO_KEEP, keep)  # wraps the array, not a copy: set once, written per run
        return GenaiKV(generator, self._kv_bytes, keep)

    def forward(self, ids: list[int], kv: GenaiKV, keep: int = 1) -> Any:
        """Run ``ids`` on ``kv``; the logits of the last ``keep`` positions as a torch tensor, [keep, vocab]."""
        if kv.logits_to_keep is not None:
            # GenAI reads the last row that is not the pad token: where the ids end in it, compute every row.
            whole = keep >= len(ids) or ids[-1] == self._pad_id
            kv.logits_to_keep[0] = 0 if whole else keep
        kv.generator.append_tokens(self._np.asarray(ids, dtype=self._np.int32))
        logits = kv.generator.get_logits() if keep == 1 else kv.generator.get_output("logits")
        rows = self._np.array(logits, dtype=self._np.float32, copy=True)  # the next run reuses GenAI's buffer
        return self._torch.from_numpy(rows.reshape(-1, rows.shape[-1])[-keep:])


def _beside_model(library: Path, directory: Path) -> Path:
    """A copy of ``library`` in the model's folder: GenAI loads custom operators only from there."""
    import shutil

    copy = directory / library.name
    if not copy.is_file():
        partial = copy.with_name(f"{copy.name}.partial-{os.getpid()}")
        shutil.copyfile(library, partial)
        partial.replace(copy)
    return copy
