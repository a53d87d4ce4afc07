"""Convert a transformers checkpoint to a GGUF file with llama.cpp's own converter, for benchmarks.

    python scripts/hf-to-gguf.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf [outtype]

LLAMA_CPP_DIR is what `scripts/build-llama-server.sh --native` prints (it holds
convert_hf_to_gguf.py and gguf-py). Two adjustments, both for the random test
models only: transformers 5 nests ``partial_rotary_factor`` and ``rope_theta``
under ``rope_parameters`` while the converter reads them at the top level, and
a tokenizer trained here is unknown to the converter's table of pre-tokenizers
(it is a byte-level BPE like GPT-2's; its size does not change decode speed).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> None:
    llama, model, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    outtype = sys.argv[4] if len(sys.argv) > 4 else "f32"
    with tempfile.TemporaryDirectory() as staged:
        staged_dir = Path(staged)
        for item in model.iterdir():
            if item.name != "config.json":
                (staged_dir / item.name).symlink_to(item.resolve())
        config = json.loads((model / "config.json").read_text())
        config.update({k: v for k, v in (config.get("rope_parameters") or {}).items() if k not in config})
        (staged_dir / "config.json").write_text(json.dumps(config))
        sys.path[:0] = [str(llama / "gguf-py"), str(llama)]
        import convert_hf_to_gguf as converter

        try:
            from conversion.base import TextModel  # llama.cpp since 2026: the converter split into modules
        except ImportError:
            TextModel = converter.TextModel
        known = TextModel.get_vocab_base_pre

        def pre_tokenizer(self, tokenizer):
            try:
                return known(self, tokenizer)
            except NotImplementedError:
                return "gpt-2"

        TextModel.get_vocab_base_pre = pre_tokenizer
        sys.argv = ["convert_hf_to_gguf.py", str(staged_dir), "--outfile", out, "--outtype", outtype]
        converter.main()
    shutil.os.sync()


if __name__ == "__main__":
    main()
