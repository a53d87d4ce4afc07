"""fp32 Linear layers in oneDNN's weight layout, for the CPU.

Measured on this project's 2-core AVX2 machines with Phi-2's layer shapes:
torch's default fp32 GEMV (one token at a time) streams weights at 15-19 GB/s,
oneDNN's at 21-23 GB/s, against 25-28 GB/s for a plain read; prefill chunks of
16-64 tokens run 1.2-1.6x faster. Decode is bound by reading every weight once
per token, so this is most of the gap between transformers' eager fp32 and
the memory-bandwidth floor. Results differ from nn.Linear only by summation
order (about 1e-6).
"""

from __future__ import annotations

import torch

from . import mapping


class OneDnnLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(self.out_features)
        self.weight = weight.to_mkldnn()
        self.bias = bias.float().to_mkldnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous().to_mkldnn()
        out = torch._C._nn.mkldnn_linear(rows, self.weight, self.bias).to_dense()
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layout=onednn"


def available() -> bool:
    return torch.backends.mkldnn.is_available()


# Below this many weights a layer gains little, and oneDNN's extra layout
# conversions (three parallel regions per call instead of one) cost more when
# another process competes for the cores: seen 8 ms per call for Gemma 3 270M's
# 640x2048 layers with a second busy process, against 0.3 ms alone.
MIN_WEIGHTS = 4 * 2**20


def convert_linears(model: torch.nn.Module) -> int:
    """Swap every large fp32 nn.Linear in ``model`` for a OneDnnLinear, one at a time (low peak memory).

    A Linear whose weight is shared (an output head tied to the embeddings) stays
    as it is: converting it would keep two copies of the matrix.
    """
    counts: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        counts[parameter.data_ptr()] = counts.get(parameter.data_ptr(), 0) + 1
    swapped = 0
    mapped = mapping.checkpoint_ranges()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if (
                type(child) is torch.nn.Linear
                and child.weight.dtype == torch.float32
                and child.weight.numel() >= MIN_WEIGHTS
                and counts.get(child.weight.data_ptr(), 0) == 1
            ):
                setattr(module, child_name, OneDnnLinear(child))
                mapping.drop_pages(child.weight, mapped)  # copied: its pages in the file are done with
                swapped += 1
    return swapped
