"""The engine clients: where the front's one ``generate`` call goes, chosen once from ``engine.backend``.

Every backend has the same small surface, so the pipeline never knows which
it talks to:

- ``start()``: load or connect; states go to the status callback
  (``loading`` with a percent, ``ready``, ``error``);
- ``generate(job) -> GenerationResult``: cancelled by cancelling the
  awaiting task, which stops the engine's decoding too;
- ``count_tokens(text)`` and ``context_tokens`` for the prompt's budget;
- ``heals`` (the engine can constrain the first tokens: token healing),
  ``warms`` (warm-ups are worth sending), ``fits`` (it can judge
  candidates by the code after the cursor) and ``fim`` (the model's
  fill-in-the-middle markers, or None);
- ``forget(document)``, ``forget_all()``, ``report()``, ``close()``.
"""

from __future__ import annotations

from typing import Any, Callable

from ..config import EngineSettings

StatusCallback = Callable[[str, str, Any], None]  # (state, message, percent or None), from any thread


def make_backend(settings: EngineSettings, on_status: StatusCallback) -> Any:
    if settings.backend == "local":
        from .local import LocalBackend  # imports torch: only when the model runs in this process

        return LocalBackend(settings, on_status)
    if settings.backend in ("auto", "phils"):
        from .phils_engine import PhilsEngineBackend

        return PhilsEngineBackend(settings, on_status, autostart_engine=settings.backend == "auto")
    from .remote import RemoteBackend

    return RemoteBackend(settings, on_status)
