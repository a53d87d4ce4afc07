"""Per-document KV caches of the last prompt, bounded in bytes, least recently used out first."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

log = logging.getLogger(__name__)


@dataclass
class CachedPrefix:
    ids: list[int]  # the token ids whose keys and values ``kv`` holds
    kv: Any  # a transformers DynamicCache covering exactly ``ids``

    @property
    def nbytes(self) -> int:
        return kv_bytes(self.kv)


def kv_bytes(kv: Any) -> int:
    if isinstance(getattr(kv, "nbytes", None), int):  # a runtime's own cache that knows its size (GenAI)
        return kv.nbytes
    total = 0
    for layer in getattr(kv, "layers", ()):
        if hasattr(layer, "capacity_bytes"):  # what its buffers hold resident, written room included
            total += layer.capacity_bytes
            continue
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None and hasattr(tensor, "nbytes"):
                total += tensor.nbytes
    return total


class _CountingLRU(LRUCache):
    evictions = 0

    def popitem(self):  # cachetools calls this to make room
        item = super().popitem()
        self.evictions += 1
        return item


class PrefixCache:
    """The engine takes a document's entry while it generates and puts it back after."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries = _CountingLRU(maxsize=max(max_bytes, 1), getsizeof=lambda e: e.size)
        self._lock = threading.Lock()  # didClose arrives on the event loop's thread

    def take(self, key: str) -> CachedPrefix | None:
        with self._lock:
            entry = self._entries.pop(key, None)
        return entry.value if entry else None

    def shared(self, key: str, ids: list[int], minimum: int = 0) -> int:
        """How many of ``ids``' first tokens ``key``'s entry holds; without one (and ``minimum`` > 0), the
        most any entry holds if at least ``minimum``, as ``take_longest_prefix`` would take it. Nothing
        is taken."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return common_prefix(entry.value.ids, ids)
            return self._longest(ids, minimum)[1] if minimum > 0 else 0

    def take_longest_prefix(self, ids: list[int], minimum: int) -> CachedPrefix | None:
        """Take the entry that shares the longest token prefix with ``ids`` (at least ``minimum``)."""
        with self._lock:
            best_key, _ = self._longest(ids, minimum)
            entry = self._entries.pop(best_key, None) if best_key is not None else None
        return entry.value if entry else None

    def _longest(self, ids: list[int], minimum: int) -> tuple[str | None, int]:
        """The entry sharing the longest token prefix with ``ids``, at least ``minimum``: (key, length), or
        (None, 0). The caller holds the lock."""
        best_key, best = None, minimum - 1
        for key, entry in self._entries.items():
            if entry.value.ids[:1] == ids[:1] and (shared := common_prefix(entry.value.ids, ids)) > best:
                best_key, best = key, shared
        return (best_key, best) if best_key is not None else (None, 0)

    def drop_where(self, predicate) -> int:
        """Drop every entry whose key matches ``predicate`` (a window went away); returns how many."""
        with self._lock:
            keys = [key for key in self._entries if predicate(key)]
            for key in keys:
                self._entries.pop(key, None)
        return len(keys)

    def put(self, key: str, prefix: CachedPrefix) -> None:
        size = prefix.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            self._entries[key] = _Sized(prefix, size)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    @property
    def bytes_used(self) -> int:
        with self._lock:
            return int(self._entries.currsize)

    @property
    def evictions(self) -> int:
        return self._entries.evictions

    def __len__(self) -> int:
        return len(self._entries)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class _Sized:
    value: CachedPrefix
    size: int  # measured once: cachetools asks for it again on removal


def crop(kv: Any, length: int) -> bool:
    """Crop ``kv`` to ``length`` tokens; False when this cache type cannot be cropped there."""
    excess = kv.get_seq_length() - length
    if excess < 0:
        return False
    try:
        kv.crop(-excess)  # transformers 5: a negative count of tokens to drop
    except (RuntimeError, ValueError) as exc:  # sliding-window layers past their window
        log.debug("KV cache not reusable: %s", exc)
        return False
    return kv.get_seq_length() == length
