"""The one thread that touches the model.

The model is not thread-safe and there is one accelerator, so every load and
generation runs here one at a time, while event loops stay free to take
edits and cancellations. Jobs run by priority, then in order: completions
before warm-ups, so a warm-up never delays a request that waits for an
answer. The thread is a daemon: a generation in flight never holds up the
process's exit.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

log = logging.getLogger(__name__)

URGENT = 0  # loads and completions
BACKGROUND = 1  # warm-ups
IDLE = 2  # the engine's own work when nothing else waits (the whole prompt after a near window's answer)
_STOP = 3


class ModelWorker:
    def __init__(self, name: str = "phils-model"):
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self.busy = False  # a job is running now
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = URGENT) -> Future:
        future: Future = Future()
        self._jobs.put((priority, next(self._order), (future, fn, args)))
        return future

    def stop(self) -> None:
        self._jobs.put((_STOP, next(self._order), None))

    @property
    def pending(self) -> int:
        return self._jobs.qsize()

    def _run(self) -> None:
        while (job := self._jobs.get()[2]) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            self.busy = True
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # the worker must survive anything a job does
                log.debug("job failed", exc_info=True)
                future.set_exception(exc)
            finally:
                self.busy = False
