"""Facts about this machine and its processes, read once where they are needed:
usable cores, memory from /proc/meminfo, a process's threads and resident memory."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity), not all the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def meminfo() -> dict[str, int]:
    """MemTotal and MemAvailable in bytes (empty where /proc/meminfo cannot be read)."""
    figures: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    figures[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return figures


def available_memory() -> int:
    """MemAvailable (free + reclaimable page cache): a just-loaded model's file pages fill "free" memory."""
    if (available := meminfo().get("MemAvailable")) is not None:
        return available
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


PROCESS_FIELDS = {"Threads:": ("threads", 1), "VmRSS:": ("rss_mb", 1024), "RssAnon:": ("anon_mb", 1024)}
MEMORY_DETAIL = {"VmHWM:": ("peak_mb", 1024), "RssFile:": ("file_mb", 1024)}  # the peak; file-backed pages


def process_figures(pid: int | str = "self", fields: dict[str, tuple[str, int]] = PROCESS_FIELDS) -> dict[str, float]:
    """Threads and memory of a process (this one by default), from /proc; empty elsewhere."""
    figures: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, *rest = line.split()
                if name in fields:
                    key, divisor = fields[name]
                    figures[key] = int(rest[0]) if divisor == 1 else round(int(rest[0]) / divisor, 1)
    except OSError:
        pass
    return figures
