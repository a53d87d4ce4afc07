"""A transformers model run by torch: the runtime behind every precision but int4.

Its KV cache is a transformers ``DynamicCache`` whose layers write in place
(``kv.GrowingLayer``); a forward pass appends tokens to it and returns logits.
"""

from __future__ import annotations

from typing import Any


class TorchRuntime:
    name = "torch"
    min_prefill = 1  # tokens a reused cache still runs: the last prompt token's logits start the decode
    can_rewind = True  # every layer of its caches, sliding-window ones too, can be cut back (kv.new_cache)

    def __init__(self, model: Any):
        import torch

        self._torch = torch
        self.model = model
        self.device = model.device.type
        window = getattr(model.config, "max_position_embeddings", None)
        self.window = int(window) if isinstance(window, int) and window > 0 else None
        self.eos_ids = token_ids(getattr(model.generation_config, "eos_token_id", None))

    def new_kv(self, reserve: int) -> Any:
        """An empty KV cache; on the CPU with address space for ``reserve`` tokens (pages become resident when written)."""
        from .kv import new_cache  # torch and transformers load with the model, not with the server

        # A GPU allocates memory for real: there the cache grows instead.
        return new_cache(self.model.config, reserve if self.device == "cpu" else 0)

    def forward(self, ids: list[int], kv: Any, keep: int = 1) -> Any:
        """Run ``ids`` on ``kv`` (which then holds them too); the logits of the last ``keep`` positions, [keep, vocab]."""
        torch = self._torch
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        out = self.model(input_ids=input_ids, past_key_values=kv, use_cache=True, logits_to_keep=keep)
        return out.logits[0, -keep:]


def token_ids(value: Any) -> set[int]:
    """A config's token id or list of them, as a set."""
    if isinstance(value, int):
        return {value}
    if isinstance(value, (list, tuple)):
        return {v for v in value if isinstance(v, int)}
    return set()
