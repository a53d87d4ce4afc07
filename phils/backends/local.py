"""The model in this process (``engine.backend = "local"``): for tests, ``phils complete``, and users who want it."""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import EngineSettings
from ..engine.serving.service import CancelFlag, EngineService
from ..protocol import EngineError, EngineJob, GenerationResult
from .. import tokens
from . import StatusCallback


class LocalBackend:
    heals = True  # the decode loop can constrain tokens
    warms = True
    fits = True  # judges candidates by the code after the cursor (protocol.EngineJob.fit_suffix)
    fim: dict[str, str] | None = None  # the model's fill-in-the-middle markers, once loaded (if it has them)

    def __init__(self, settings: EngineSettings, on_status: StatusCallback):
        self.service = EngineService(settings)
        self.service.subscribe(lambda s: on_status(s["state"], s["message"], s.get("percent")))
        self.count_tokens = tokens.estimate
        self.description = "in this process"

    @property
    def context_tokens(self) -> int:
        return self.service.model_info()["context_tokens"]

    async def start(self) -> None:
        await asyncio.wrap_future(self.service.load())
        if self.service.state == "ready":
            self.count_tokens = self.service.count_tokens
            self.fim = self.service.model_info().get("fim")

    async def generate(self, job: EngineJob) -> GenerationResult:
        if self.service.state != "ready":
            raise EngineError(f"the model is {self.service.state}", "loading")
        cancel = CancelFlag()
        try:
            return await asyncio.wrap_future(self.service.submit(job, cancel))
        except asyncio.CancelledError:  # superseded or $/cancelRequest: stop the decode loop too
            cancel.set()
            raise

    async def forget(self, document: str) -> None:
        self.service.forget("", document)

    def forget_all(self) -> None:
        self.service.window_left("")

    async def report(self) -> dict[str, Any]:
        return {"busy": self.service.busy, "cache": self.service.cache_report()}

    async def close(self) -> None:
        self.service.close()
