"""The one thread that touches the model.

The model is not thread-safe and there is one accelerator, so every load and
generation runs here in order, while the server's event loop stays free to
take edits and cancellations. The thread is a daemon: a generation in flight
never holds up the process's exit.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

log = logging.getLogger(__name__)


class ModelWorker:
    def __init__(self, name: str = "phils-model"):
        self._jobs: queue.Queue = queue.Queue()
        self.busy = False  # a job is running now
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    @property
    def pending(self) -> int:
        return self._jobs.qsize()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
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
