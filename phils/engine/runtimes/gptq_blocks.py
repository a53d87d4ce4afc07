"""A GPTQ checkpoint's own blocks, for the int4 build with phils' kernels (``cpu-gptq``), not quantized again.

A GPTQ weight is ``scale[g] * (q - zero[g])`` with ``g = g_idx[k]`` the group of
input channel k: the kernel's ``scale * code - offset`` with ``offset = scale *
zero``, once each kernel block of 32 channels lies in one group. Without
act-order the groups are runs of 32, 64 or 128 channels and they do. With
act-order (TheBloke's ``*-actorder_True`` branches) a group's channels are
scattered; sorted by group they are runs again, so the matrix is stored with
its input channels in that order (``Blocks.perm``) and the build puts a Gather
of the activations in front of it. q, k and v share their input, so a
calibration gives them one order and the fused matrix keeps it.

The build reads the checkpoint dequantized (``dequantize_checkpoint``, fp16 as
the model was trained) and finds each row it emits here by content, as
``gguf_blocks`` does: the builder fuses and renames matrices.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .gguf_blocks import BLOCK, Blocks, _key, hits, take_equal

log = logging.getLogger(__name__)

SHARD_BYTES = 1 << 30  # the dequantized checkpoint is written in shards, so no more than one is held in memory


def is_gptq(config: dict[str, Any]) -> bool:
    quant = config.get("quantization_config")
    return isinstance(quant, dict) and str(quant.get("quant_method", "")).lower() == "gptq"


def _format(config: dict[str, Any]) -> tuple[int, int, int]:
    """(bits, zero-point shift, group size; 0 for one group): format "gptq" (v1, auto-gptq's) stores each zero
    point minus one."""
    quant = config["quantization_config"]
    bits = int(quant.get("bits", 4))
    if bits not in (4, 8):
        raise ValueError(f"GPTQ with {bits} bits: phils reads 4- and 8-bit GPTQ checkpoints")
    shift = 0 if str(quant.get("checkpoint_format", "gptq")).lower() == "gptq_v2" else 1
    return bits, shift, max(0, int(quant.get("group_size", 128)))


def _unpack(packed: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """int32 words holding 32/bits values each, lowest bits first, unpacked along ``axis``."""
    per = 32 // bits
    words = np.asarray(packed).view(np.uint32)
    shifts = (np.arange(per, dtype=np.uint32) * bits).reshape((1,) * (axis + 1) + (per,) + (1,) * (words.ndim - axis - 1))
    values = (np.expand_dims(words, axis + 1) >> shifts) & np.uint32((1 << bits) - 1)
    shape = list(words.shape)
    shape[axis] *= per
    return values.reshape(shape).astype(np.uint8 if bits <= 8 else np.uint16)


class _Matrix:
    """One quantized linear layer: q [K, N], zero and scale [groups, N], g_idx [K]."""

    def __init__(self, tensors: dict[str, np.ndarray], bits: int, shift: int, group_size: int):
        self.q = _unpack(tensors["qweight"], bits, 0)  # [K, N]
        self.zero = _unpack(tensors["qzeros"], bits, 1).astype(np.float32) + shift  # [groups, N]
        self.scale = tensors["scales"].astype(np.float32)  # [groups, N]
        k = self.q.shape[0]
        self.g_idx = (tensors["g_idx"].astype(np.int64) if "g_idx" in tensors
                      else np.arange(k) // group_size if group_size else np.zeros(k, dtype=np.int64))

    def dense(self) -> np.ndarray:
        """The weights [N, K] as the dequantized checkpoint holds them: computed in fp32, stored fp16."""
        values = self.scale[self.g_idx] * (self.q.astype(np.float32) - self.zero[self.g_idx])
        return values.T.astype(np.float16).astype(np.float32)

    def order(self) -> tuple[np.ndarray | None, bool]:
        """The input-channel order that makes each group a run (None: as stored), and whether every kernel
        block of 32 then lies in one group."""
        perm = None if (np.diff(self.g_idx) >= 0).all() else np.argsort(self.g_idx, kind="stable")
        grouped = self.g_idx if perm is None else self.g_idx[perm]
        k = grouped.shape[0]
        fits = k % BLOCK == 0 and (grouped.reshape(-1, BLOCK) == grouped.reshape(-1, BLOCK)[:, :1]).all()
        return perm, bool(fits)

    def blocks(self, rows: np.ndarray, perm: np.ndarray | None) -> Blocks:
        cols = slice(None) if perm is None else perm
        first = (self.g_idx if perm is None else self.g_idx[perm])[::BLOCK]  # each kernel block's group
        scale = self.scale[first][:, rows].T
        return Blocks(np.ascontiguousarray(self.q[cols][:, rows].T), np.ascontiguousarray(scale),
                      np.ascontiguousarray(scale * self.zero[first][:, rows].T), perm)


PARTS = ("qweight", "qzeros", "scales", "g_idx")


def _layers(directory: Path) -> Iterator[tuple[Path, str]]:
    """(file, prefix) of each quantized layer of a checkpoint directory."""
    from safetensors import safe_open

    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            yield from ((path, name[: -len(".qweight")]) for name in sorted(handle.keys()) if name.endswith(".qweight"))


def _read(path: Path, prefix: str, bits: int, channels: int | None = None) -> dict[str, np.ndarray]:
    """A layer's GPTQ tensors; with ``channels``, only the first input channels' weights."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:  # torch reads bf16, which numpy cannot
        names = set(handle.keys())
        tensors = {}
        for part in PARTS:
            if f"{prefix}.{part}" not in names:
                continue
            if channels is not None and part in ("qweight", "g_idx"):
                rows = channels * bits // 32 if part == "qweight" else channels
                value = handle.get_slice(f"{prefix}.{part}")[:rows]
            else:
                value = handle.get_tensor(f"{prefix}.{part}")
            tensors[part] = (value.float() if value.is_floating_point() else value).numpy()
    return tensors


class GptqBlocks:
    """The quantized matrices of one GPTQ checkpoint directory, their rows indexed by their first 32 values."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory)
        form = _format(json.loads((self.path / "config.json").read_text()))
        self._form = form
        bits = form[0]
        self._layers = list(_layers(self.path))  # read again when a row of theirs is found: packed, not held
        self._rows: dict[bytes, tuple[int, int]] = {}
        for index, (path, prefix) in enumerate(self._layers):
            first = _Matrix(_read(path, prefix, bits, channels=BLOCK), *form)
            for row, values in enumerate(first.dense()):
                self._rows.setdefault(_key(values), (index, row))
        log.info("%s: %d rows of %d-bit GPTQ blocks in %d matrices", self.path.name, len(self._rows), bits,
                 len(self._layers))

    def _matrix(self, index: int) -> "_Matrix":
        return _Matrix(_read(*self._layers[index], self._form[0]), *self._form)

    def wider(self, weight: np.ndarray) -> int:
        """How many rows of ``weight`` [N, K] the checkpoint stores with more than 4 bits (an 8-bit GPTQ's)."""
        return sum(_key(row) in self._rows for row in weight) if self._form[0] > 4 else 0

    def find(self, weight: np.ndarray) -> tuple[np.ndarray, Blocks]:
        """For ``weight`` [N, K]: which rows are the checkpoint's 4-bit rows, and their blocks, all in one
        input-channel order (``Blocks.perm``; the other rows' zeros are to be filled in that order)."""
        n, k = weight.shape
        found = np.zeros(n, dtype=bool)
        if self._form[0] != 4:  # an 8-bit checkpoint's rows are only recognised (``wider``)
            return found, Blocks.zeros(n, k)
        wanted = hits(self._rows, weight)
        matrices = {index: self._matrix(index) for index in wanted}
        matrices = {index: matrix for index, matrix in matrices.items() if matrix.q.shape[0] == k}
        orders = {index: matrix.order() for index, matrix in matrices.items()}
        usable = {index: perm for index, (perm, fits) in orders.items() if fits}
        if not usable:
            return found, Blocks.zeros(n, k)
        # One order per matrix the build emits: the one most of its rows have (q, k and v share theirs).
        def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

        chosen = max(usable.values(), key=lambda perm: sum(len(wanted[i]) for i, p in usable.items() if same(p, perm)))
        out = Blocks.zeros(n, k)
        out.perm = chosen
        cols = slice(None) if chosen is None else chosen
        for index, perm in usable.items():
            if not same(perm, chosen):
                continue
            ours, theirs = (np.array(side) for side in zip(*wanted[index]))
            blocks = matrices[index].blocks(theirs, chosen)
            # The checkpoint holds fp16: equal to fp16's rounding (half a unit in the last place of |w| <= 15 steps).
            take_equal(out, found, ours, blocks, weight[ours][:, cols], 0.01, 1e-7)
        return found, out


def dequantize_checkpoint(source: Path, target: Path) -> None:
    """Write ``source`` (a GPTQ checkpoint directory) to ``target`` as an fp16 checkpoint the builder reads."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((source / "config.json").read_text())
    form = _format(config)
    target.mkdir(parents=True, exist_ok=True)
    shard: dict[str, Any] = {}
    index: dict[str, str] = {}
    size = 0

    def flush() -> None:
        nonlocal shard, size
        if shard:
            name = f"model-{len(set(index.values())) + 1:05d}.safetensors"
            save_file(shard, str(target / name), metadata={"format": "pt"})
            index.update(dict.fromkeys(shard, name))
        shard, size = {}, 0

    def add(name: str, values: Any) -> None:
        nonlocal size
        shard[name] = values.contiguous()
        size += values.numel() * values.element_size()
        if size >= SHARD_BYTES:
            flush()

    layers = list(_layers(source))
    quantized = {f"{prefix}.{part}" for _, prefix in layers for part in PARTS}
    for path, prefix in layers:
        add(f"{prefix}.weight", torch.from_numpy(_Matrix(_read(path, prefix, form[0]), *form).dense().astype(np.float16)))
    for path in sorted(source.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in sorted(set(handle.keys()) - quantized):
                add(name, handle.get_tensor(name))
    flush()
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}, indent=1))
    config.pop("quantization_config")
    config["torch_dtype"] = "float16"
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for path in source.iterdir():  # tokenizer and generation files
        if path.is_file() and path.suffix != ".safetensors" and path.name != "config.json" \
                and not path.name.endswith(".index.json"):
            shutil.copy2(path, target / path.name)

