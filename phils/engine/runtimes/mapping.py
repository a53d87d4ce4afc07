"""Let go of the memory-mapped checkpoint once the weights that run have been copied out of it.

transformers maps a safetensors checkpoint and hands out tensors that point
into the mapping. When the big matrices are replaced by copies in another
layout (int8, oneDNN), whatever still points into the file (embeddings,
norms, biases) keeps all of it mapped, and its pages resident: Phi-2's shape
in fp32 with oneDNN held 20.6 GB for a 10.6 GB checkpoint. Own copies of the
small rest let the mapping go. While the copies are being made,
``drop_pages`` tells the kernel which mapped pages are done with, so that
loading never holds the file and the copies in full at once (load peak 21.4
GB before, 11.7 GB after; int8 14.8 GB before, 5.3 GB after).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from typing import Any


def own_copies(model: Any) -> None:
    """Give every plain parameter and buffer of ``model`` memory of its own (in place; ties are kept)."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.layout == torch.strided and not tensor.is_mkldnn:
                tensor.data = tensor.data.clone()


def checkpoint_ranges() -> list[tuple[int, int]]:
    """This process's address ranges that map a safetensors file (Linux; empty elsewhere)."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and fields[5].endswith(".safetensors"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        pass
    return ranges


def drop_pages(tensor: Any, ranges: list[tuple[int, int]]) -> int:
    """Release the resident pages of a checkpoint-mapped ``tensor`` that will not be read again; returns bytes.

    Only pages wholly inside the tensor and inside a file mapping: the file
    keeps the data (a later read would page it in again), and anonymous
    memory, which MADV_DONTNEED would zero, is never touched.
    """
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    if not _LIBC or not any(a <= start and end <= b for a, b in ranges):
        return 0
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    return _dont_need(first, last) if last > first else 0


def drop_mapped(ranges: list[tuple[int, int]]) -> int:
    """Release every resident page of the checkpoint mappings ``ranges``; returns bytes advised.

    Safe whatever is still to be read: the pages come back from the file on
    the next read. For a reader that passes over the checkpoint once.
    """
    return sum(_dont_need(start, end) for start, end in ranges) if _LIBC else 0


def _dont_need(start: int, end: int) -> int:
    """MADV_DONTNEED on the page-aligned [start, end); the bytes advised (0 if refused)."""
    ok = _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), mmap.MADV_DONTNEED) == 0
    return end - start if ok else 0


def _libc() -> Any:
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
