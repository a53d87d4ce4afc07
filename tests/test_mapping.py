"""Letting go of a memory-mapped checkpoint: pages released as their tensors are copied, data kept."""

from __future__ import annotations

import mmap
import warnings
from pathlib import Path

import pytest
import torch

from phils.engine.runtimes import mapping
from phils.machine import MEMORY_DETAIL, process_figures

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads mappings from /proc (Linux)")


def _file_resident_mb() -> float:
    return process_figures(fields=MEMORY_DETAIL)["file_mb"]


def test_a_mapped_checkpoint_tensors_pages_are_released_and_its_values_stay_readable(tmp_path):
    values = torch.arange(4 * 2**20, dtype=torch.float32)  # 16 MiB
    path = tmp_path / "model.safetensors"
    path.write_bytes(values.numpy().tobytes())
    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only buffer: this test never writes to it
        tensor = torch.frombuffer(mapped, dtype=torch.float32)
    assert float(tensor.sum()) == float(values.sum())  # every page read: resident
    ranges = mapping.checkpoint_ranges()
    assert any(a <= tensor.data_ptr() < b for a, b in ranges)
    before = _file_resident_mb()
    released = mapping.drop_pages(tensor, ranges)
    assert released >= 15 * 2**20
    assert before - _file_resident_mb() >= 12  # MiB: most of the 16 MiB left this process
    assert torch.equal(tensor, values)  # read again from the file
    del tensor
    mapped.close()


def test_memory_that_is_not_a_mapped_checkpoint_is_never_touched():
    tensor = torch.arange(4 * 2**20, dtype=torch.float32)
    assert mapping.drop_pages(tensor, mapping.checkpoint_ranges()) == 0
    assert torch.equal(tensor, torch.arange(4 * 2**20, dtype=torch.float32))
