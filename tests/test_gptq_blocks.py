"""A GPTQ checkpoint's own blocks (engine/runtimes/gptq_blocks.py): read as written, found when fused.

The checkpoints here are packed by the test itself, value by value, the way
auto-gptq writes them (4-bit values eight to an int32 word, lowest bits
first; zero points stored minus one), so the reader is checked against an
independent packing, not against itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phils.engine.runtimes.gguf_blocks import BLOCK
from phils.engine.runtimes.gptq_blocks import GptqBlocks, dequantize_checkpoint


def _pack(values: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Pack unsigned values along ``axis`` into int32 words, value i of a word at bits [i*bits, (i+1)*bits)."""
    per = 32 // bits
    moved = np.moveaxis(values.astype(np.uint64), axis, 0)
    words = np.zeros((moved.shape[0] // per,) + moved.shape[1:], dtype=np.uint64)
    for i in range(per):
        words |= moved[i::per] << np.uint64(bits * i)
    return np.ascontiguousarray(np.moveaxis(words.astype(np.uint32).view(np.int32), 0, axis))


class Layer:
    """A random quantized layer and the weights it stands for."""

    def __init__(self, rng: np.random.Generator, k: int, n: int, group: int, bits: int = 4,
                 act_order: bool = False, g_idx: np.ndarray | None = None):
        top = 2 ** bits
        self.q = rng.integers(0, top, (k, n))
        self.zero = rng.integers(1, top, (k // group, n))  # as stored: 1..top-1, read back plus one
        self.scale = (rng.random((k // group, n)) * 0.01 + 0.001).astype(np.float16)
        if g_idx is None:
            g_idx = np.arange(k) // group
            if act_order:
                g_idx = g_idx[rng.permutation(k)]
        self.g_idx = g_idx
        self.tensors = {"qweight": _pack(self.q, bits, 0), "qzeros": _pack(self.zero - 1, bits, 1),
                        "scales": self.scale, "g_idx": self.g_idx.astype(np.int32)}

    def weights(self) -> np.ndarray:
        """[N, K]: scale * (q - zero) of each channel's group, as an fp16 checkpoint holds it."""
        scale, zero = self.scale.astype(np.float32)[self.g_idx], self.zero[self.g_idx]
        return (scale * (self.q - zero)).T.astype(np.float16).astype(np.float32)


def _checkpoint(directory: Path, layers: dict[str, Layer], bits: int = 4) -> Path:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{prefix}.{part}": values for prefix, layer in layers.items() for part, values in layer.tensors.items()}
    tensors["model.embed_tokens.weight"] = np.ones((8, 4), dtype=np.float16)
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_type": "phi", "quantization_config": {
        "quant_method": "gptq", "bits": bits, "group_size": 32, "desc_act": True, "checkpoint_format": "gptq"}}))
    (directory / "tokenizer.json").write_text("{}")
    return directory


@pytest.fixture
def attention(tmp_path):
    """q, k and v sharing one act-order channel order (as a calibration gives them), and an MLP layer of its own."""
    rng = np.random.default_rng(0)
    q = Layer(rng, 128, 64, 32, act_order=True)
    layers = {"attn.q_proj": q, "attn.k_proj": Layer(rng, 128, 32, 32, g_idx=q.g_idx),
              "attn.v_proj": Layer(rng, 128, 32, 32, g_idx=q.g_idx), "mlp.fc1": Layer(rng, 128, 96, 64, act_order=True)}
    return _checkpoint(tmp_path / "gptq", layers), layers


def test_fused_act_order_rows_keep_their_codes_in_the_groups_order(attention):
    directory, layers = attention
    fused = np.concatenate([layers[name].weights() for name in ("attn.q_proj", "attn.k_proj", "attn.v_proj")])
    found, blocks = GptqBlocks(directory).find(fused)
    assert found.all()
    perm = blocks.perm
    assert perm is not None and sorted(perm) == list(range(128))
    # Each kernel block of 32 (in that order) lies in one group; its codes are the checkpoint's.
    groups = layers["attn.q_proj"].g_idx[perm].reshape(-1, BLOCK)
    assert (groups == groups[:, :1]).all()
    q = np.concatenate([layers[name].q for name in ("attn.q_proj", "attn.k_proj", "attn.v_proj")], axis=1)
    assert np.array_equal(blocks.codes, q[perm].T)
    # Their values are the weights in that channel order, but for fp16's rounding of the checkpoint.
    step = np.repeat(blocks.scale, BLOCK, axis=1)
    assert (np.abs(blocks.values() - fused[:, perm]) <= 0.01 * step).all()


def test_rows_in_another_channel_order_are_left_for_quantizing(attention):
    directory, layers = attention
    mixed = np.concatenate([layers["attn.q_proj"].weights(), layers["mlp.fc1"].weights()[:, :128]])
    found, blocks = GptqBlocks(directory).find(mixed)
    # One order serves a matrix (one Gather of its input): the larger share of rows keeps its blocks.
    assert found[96:].all() and not found[:64].any()
    assert np.array_equal(blocks.perm, np.argsort(layers["mlp.fc1"].g_idx, kind="stable"))


def test_a_row_matching_only_in_its_first_block_is_not_taken(attention):
    directory, layers = attention
    weights = layers["attn.q_proj"].weights()
    weights[3, -1] += 0.5
    found, _ = GptqBlocks(directory).find(weights)
    assert not found[3] and found[np.arange(64) != 3].all()


def test_eight_bit_checkpoints_are_wider_not_blocks(tmp_path):
    rng = np.random.default_rng(1)
    layer = Layer(rng, 64, 32, 32, bits=8)
    own = GptqBlocks(_checkpoint(tmp_path / "gptq8", {"fc": layer}, bits=8))
    found, _ = own.find(layer.weights())
    assert not found.any() and own.wider(layer.weights()) == 32


def test_the_dequantized_checkpoint_holds_the_weights_and_drops_the_quantization(attention, tmp_path):
    from safetensors.numpy import load_file

    directory, layers = attention
    out = tmp_path / "dequantized"
    dequantize_checkpoint(directory, out)
    tensors = {}
    for path in out.glob("*.safetensors"):
        tensors.update(load_file(str(path)))
    assert set(tensors) == {f"{name}.weight" for name in layers} | {"model.embed_tokens.weight"}
    for name, layer in layers.items():
        assert tensors[f"{name}.weight"].dtype == np.float16
        assert np.array_equal(tensors[f"{name}.weight"].astype(np.float32), layer.weights())
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and (out / "tokenizer.json").is_file()
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index) == set(tensors)
