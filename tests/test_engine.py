"""The engine on the tiny random Phi: decode loop, KV prefix reuse, cancel, loading errors."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from phils.config import EngineSettings
from phils.engine import Engine, GenerationRequest, ModelLoadError, load_model
from phils.engine.loading.sources import resolve

torch.set_num_threads(1)

PROMPT = 'import os\n\n\ndef add(a, b):\n    """Return the sum of a and b."""\n'


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(EngineSettings(model=str(tiny_model), threads=1))


def engine_for(loaded, cache_bytes=2**30, ignore_stops=True) -> Engine:
    return Engine(loaded, context_tokens=2048, cache_bytes=cache_bytes, ignore_stops=ignore_stops)


def test_greedy_generation_is_deterministic_and_counts_tokens(loaded):
    engine = engine_for(loaded)
    first = engine.generate(GenerationRequest("a", PROMPT, max_new_tokens=12))
    second = engine_for(loaded).generate(GenerationRequest("a", PROMPT, max_new_tokens=12))
    assert first.text == second.text
    assert first.new_tokens == 12 and first.reason == "length"
    assert first.prompt_tokens == engine.count_tokens(PROMPT)
    assert loaded.dtype == "float32" and loaded.device == "cpu"


def test_reusing_the_kv_prefix_gives_exactly_the_fresh_result(loaded):
    check_reuse_matches_fresh(loaded)


def check_reuse_matches_fresh(loaded) -> None:
    """Random edits: the document's cached prefix gives what a fresh engine gives (also on a GPU)."""
    cached, fresh = engine_for(loaded), engine_for(loaded, cache_bytes=0)
    rng = random.Random(7)
    text = PROMPT + "    "
    reused = 0
    for step in range(12):
        # Random edits: mostly typing at the end, sometimes an edit in the middle.
        if rng.random() < 0.75:
            text += rng.choice(["r", "e", "t", "u", "n", " ", "a", "+", "b", "\n    "])
        else:
            cut = rng.randrange(len(text))
            text = text[:cut] + rng.choice(["x", "#", ""]) + text[cut + 1 :]
        a = cached.generate(GenerationRequest("doc", text, max_new_tokens=8))
        b = fresh.generate(GenerationRequest("doc", text, max_new_tokens=8))
        assert a.text == b.text, f"step {step}"
        reused += a.reused_tokens
        assert b.reused_tokens == 0
    assert reused > 0
    assert cached.cache.bytes_used > 0


def test_typing_at_the_end_reuses_all_but_the_last_tokens(loaded):
    engine = engine_for(loaded)
    engine.generate(GenerationRequest("doc", PROMPT, max_new_tokens=4))
    again = engine.generate(GenerationRequest("doc", PROMPT + "    ret", max_new_tokens=4))
    assert again.reused_tokens >= again.prompt_tokens - 4
    assert again.prefill_tokens == again.prompt_tokens - again.reused_tokens


def test_the_cache_stays_within_its_byte_budget_and_forgets_closed_documents(loaded):
    one = engine_for(loaded)
    one.generate(GenerationRequest("probe", PROMPT, max_new_tokens=2))
    per_doc = one.cache.bytes_used
    engine = engine_for(loaded, cache_bytes=int(per_doc * 2.5))
    for i in range(5):
        engine.generate(GenerationRequest(f"doc{i}", PROMPT, max_new_tokens=2))
        assert engine.cache.bytes_used <= engine.cache.max_bytes
    assert len(engine.cache) == 2
    engine.forget("doc4")
    assert len(engine.cache) == 1


def test_a_cancelled_request_stops_between_tokens(loaded):
    engine = engine_for(loaded)
    cancel = threading.Event()
    calls = []

    def stop(text):
        calls.append(text)
        if len(calls) == 3:
            cancel.set()  # as if $/cancelRequest arrived while decoding
        return None

    result = engine_for(loaded, ignore_stops=False).generate(
        GenerationRequest("doc", PROMPT, max_new_tokens=500, stop=stop, cancel=cancel)
    )
    assert result.reason in ("cancelled", "eos")
    if result.reason == "cancelled":
        assert result.new_tokens == 3
    cancel.set()
    assert engine.generate(GenerationRequest("doc", PROMPT, max_new_tokens=5, cancel=cancel)).new_tokens == 0


def test_the_stop_rule_cuts_the_text(loaded):
    engine = engine_for(loaded, ignore_stops=False)
    result = engine.generate(GenerationRequest("doc", PROMPT, max_new_tokens=30, stop=lambda t: 0 if t else None))
    assert result.reason in ("stop", "eos") and result.text == ""


def test_a_deadline_returns_what_was_generated(loaded):
    engine = engine_for(loaded)
    strict = engine.generate(GenerationRequest("doc", PROMPT, max_new_tokens=500, deadline=time.monotonic(),
                                               finish_first_line=False))
    assert strict.reason == "deadline" and strict.new_tokens == 1
    # By default the first line is finished: part of a line is no suggestion. Nothing after it is written.
    result = engine_for(loaded).generate(GenerationRequest("doc", PROMPT, max_new_tokens=500, deadline=time.monotonic()))
    code = result.text.lstrip()
    assert result.reason == "deadline" and "\n" in code and not "".join(code.split("\n")[1:]).strip()


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(EngineSettings(model=str(tmp_path / "missing")))


def test_corrupt_weights_are_a_clear_error(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(EngineSettings(model=str(broken)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(tiny_model):
    with pytest.raises(ModelLoadError, match="cuda"):
        load_model(EngineSettings(model=str(tiny_model), device="cuda"))


def test_half_precision_is_not_used_on_cpu(tiny_model):
    loaded = load_model(EngineSettings(model=str(tiny_model), dtype="float16", threads=1))
    assert loaded.dtype == "float32"
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_remote_code_models_are_refused_with_a_way_out(tiny_model, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model, custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="phi-msft", auto_map={"AutoModelForCausalLM": "modeling_phi.PhiForCausalLM"})
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(EngineSettings(model=str(custom)))


def test_pickle_weights_are_refused_unless_allowed(loaded, tiny_model, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(loaded.model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        load_model(EngineSettings(model=str(pickled)))
    assert load_model(EngineSettings(model=str(pickled), allow_pickle=True)).model is not None


def test_model_references_resolve_without_loading(tiny_model, tmp_path):
    assert resolve(str(tiny_model), tmp_path).location == str(tiny_model)
    hub = resolve("microsoft/phi-2", tmp_path)
    assert not hub.local and hub.location == "microsoft/phi-2"
    with pytest.raises(ModelLoadError, match="not installed"):
        resolve("package:no_such_package_here", tmp_path)
    with pytest.raises(ModelLoadError, match="not found"):
        resolve("./models/nothing", tmp_path)


def test_a_gguf_split_over_packages_is_assembled_once_in_order(tmp_path, monkeypatch):
    """package:PREFIX1..N (Qwen2.5-Coder on PyPI): N packages' data/*.bin, concatenated in order, once."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    for number, chunk in enumerate(chunks, 1):
        data = site / f"split_model_part{number}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{number:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    source = resolve("package:split_model_part1..3", cache)
    assembled = Path(source.location) / source.gguf_file
    assert source.gguf_file.endswith(".gguf") and assembled.read_bytes() == b"".join(chunks)
    assembled.write_bytes(b"GGUF kept")  # not assembled again
    assert (Path(resolve("package:split_model_part1..3", cache).location) / source.gguf_file).read_bytes() == b"GGUF kept"
    with pytest.raises(ModelLoadError, match="split-model-part4"):  # a part not installed: named, with the fix
        resolve("package:split_model_part1..4", tmp_path / "other")
    (site / "split_model_part1" / "data" / "part01.bin").write_bytes(b"not a gguf")
    with pytest.raises(ModelLoadError, match="does not start a GGUF"):
        resolve("package:split_model_part1..3", tmp_path / "third")
    assert not list((tmp_path / "third").rglob("*.gguf"))


def test_token_healing_regenerates_the_last_token_and_cuts_it_from_the_suggestion(loaded):
    engine = engine_for(loaded)
    prompt = PROMPT + "    ret"
    healed = engine.generate(GenerationRequest("h", prompt, max_new_tokens=6))
    assert healed.healed and prompt.endswith(healed.healed)
    assert healed.prompt_tokens == engine.count_tokens(prompt) - 1
    # What was generated spells the backed-off text first; the suggestion excludes it.
    unhealed = engine.generate(GenerationRequest("u", prompt, max_new_tokens=6, heal=False))
    assert unhealed.healed == "" and unhealed.prompt_tokens == engine.count_tokens(prompt)
    # No healing after a line break or a space.
    assert engine.generate(GenerationRequest("n", PROMPT, max_new_tokens=2)).healed == ""


def test_the_vocabulary_finds_tokens_that_extend_or_begin_the_backed_off_text(loaded):
    from phils.engine.decoding.healing import Vocabulary, consume

    vocabulary = Vocabulary(loaded.tokenizer)
    decode = lambda i: loaded.tokenizer.decode([i])  # noqa: E731
    allowed = vocabulary.allowed("ret")
    assert allowed
    for token in allowed:
        text = decode(token)
        assert text.startswith("ret") or "ret".startswith(text)
    assert consume("ret", "re") == "t" and consume("ret", "return") == "" and consume("ret", "x") == ""


def test_the_decode_loop_matches_transformers_generate(loaded):
    """Greedy tokens from our loop (growing KV cache, chunked prefill) equal transformers' own."""
    engine = engine_for(loaded)
    prompt = PROMPT * 3  # longer than one prefill chunk
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        reference = loaded.model.generate(ids, max_new_tokens=10, do_sample=False, min_new_tokens=10)
    expected = loaded.tokenizer.decode(reference[0, ids.shape[1]:], skip_special_tokens=True)
    ours = engine.generate(GenerationRequest("g", prompt, max_new_tokens=10, heal=False))
    assert ours.text == expected


def test_the_growing_kv_layer_crops_and_appends_like_concatenation():
    from phils.engine.runtimes.kv import GrowingLayer

    layer = GrowingLayer()
    chunks = [torch.randn(1, 2, n, 4) for n in (3, 300, 1)]
    for chunk in chunks:
        keys, values = layer.update(chunk, chunk * 2)
    expected = torch.cat(chunks, dim=-2)
    assert torch.equal(keys, expected) and torch.equal(values, expected * 2)
    layer.crop(-5)
    assert layer.get_seq_length() == 299 and torch.equal(layer.keys, expected[..., :299, :])
    keys, _ = layer.update(chunks[2], chunks[2])
    assert torch.equal(keys[..., -1:, :], chunks[2]) and keys.shape[-2] == 300
    assert layer.capacity_bytes >= 2 * keys.nbytes


def test_a_kv_layer_reserved_for_the_context_never_moves_and_holds_only_what_was_written():
    from phils.engine.runtimes.kv import GrowingLayer

    layer = GrowingLayer(reserve=4096)
    chunk = torch.randn(1, 2, 1000, 4)
    layer.update(chunk, chunk)
    buffer = layer.keys.data_ptr()
    for _ in range(30):  # past every power of two a doubling buffer would have copied itself at
        layer.update(chunk[..., :100, :], chunk[..., :100, :])
    assert layer.keys.data_ptr() == buffer and layer.reserved_tokens == 4096
    per_token = 2 * 2 * 4 * 4  # keys and values, 2 heads, 4 dims, fp32
    assert layer.capacity_bytes == 4000 * per_token
    layer.crop(-3000)
    assert layer.capacity_bytes == 4000 * per_token  # still resident: the budget keeps counting it


def test_kv_room_on_a_device_counts_in_full_since_a_device_allocates_it_for_real():
    from phils.engine.runtimes.kv import GrowingLayer

    layer = GrowingLayer(reserve=1000)
    chunk = torch.empty(1, 2, 10, 4, device="meta")  # stands in for a GPU: not the CPU's lazy pages
    layer.update(chunk, chunk)
    assert layer.capacity_bytes == 2 * 1000 * 2 * 4 * 4


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc (Linux)")
def test_reserving_room_for_the_context_costs_no_resident_memory_until_written():
    from phils.engine.runtimes.kv import GrowingLayer

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident()
    layers = [GrowingLayer(reserve=65536) for _ in range(8)]  # 8 x 2 x 512 MiB of address space
    for layer in layers:
        chunk = torch.randn(1, 8, 16, 256)
        layer.update(chunk, chunk)
    assert layers[0].reserved_tokens == 65536
    assert resident() - before < 256 * 2**20
