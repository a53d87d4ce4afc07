"""LoRA/PEFT adapters on the base model, chosen once at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelLoadError


def apply_adapter(model: Any, adapter: str, merge: bool, allow_pickle: bool, hub_options: dict[str, Any]) -> Any:
    """The base model with the adapter (a local directory or hub id) on it.

    Merged (the default), the result is a plain model again: LoRA costs nothing
    per token. Unmerged, the adapter stays separate (peft's layers run beside
    the base weights), which keeps the base weights untouched.
    """
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ModelLoadError("engine.adapter needs peft: pip install 'phils[lora]'") from exc
    local = Path(adapter).expanduser()
    if local.is_dir():
        if not (local / "adapter_config.json").is_file():
            raise ModelLoadError(f"{adapter} is not an adapter directory (no adapter_config.json)")
        if not (local / "adapter_model.safetensors").is_file() and not allow_pickle:
            raise ModelLoadError(
                f"{adapter} has no adapter_model.safetensors; pickle weights can run code when loaded: "
                "set engine.allow_pickle = true only if you trust them"
            )
        adapter = str(local)
    # The base model's revision names a branch of its own repository, not the adapter's.
    options = {k: v for k, v in hub_options.items() if k == "local_files_only"}
    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False, **options)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load the adapter {adapter}: {first}") from exc
    return model.merge_and_unload() if merge else model
