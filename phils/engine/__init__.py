"""The completion engine: model loading, the decode loop, the KV prefix cache, the worker.

It never imports pygls: the server and the pipeline talk to it in plain data.
"""

from .errors import ModelLoadError
from ..protocol import GenerationResult
from .decoding.generate import Engine, GenerationRequest
from .loading.loader import LoadedModel, load_model
from .serving.worker import ModelWorker

__all__ = [
    "Engine",
    "GenerationRequest",
    "GenerationResult",
    "LoadedModel",
    "ModelLoadError",
    "ModelWorker",
    "load_model",
]
