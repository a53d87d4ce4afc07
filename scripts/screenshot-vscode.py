"""A screenshot of phils' ghost text in VS Code (code-server in headless Chromium) with a real model.

Usage: .venv/bin/python scripts/screenshot-vscode.py OUT.png [phils serve arguments...]
e.g.   .venv/bin/python scripts/screenshot-vscode.py editor-clients/vscode/screenshot-qwen-coder.png \\
           --profile qwen-coder --set engine.quantize=int4
Needs the editor tools (scripts/setup-editors.sh). The same drive as the VS Code test: open
sample.py, type at its end, wait for the ghost text, take the picture, accept it with Tab.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SOURCE = ('import math\n\n\ndef circle_area(radius: float) -> float:\n'
          '    """Return the area of a circle with the given radius."""\n    ')
TYPED = "return"


def main(argv: list[str]) -> int:
    if not argv or not argv[0].endswith(".png"):
        print(__doc__, file=sys.stderr)
        return 2
    out, server_args = Path(argv[0]).resolve(), argv[1:]
    from phils.engine.loading.sources import cache_root

    import test_editor_vscode as vscode  # noqa: E402 (its tools and code-server set-up)

    # The user's model cache, not the throwaway home the editor runs in: converted models are reused.
    server_args = [*server_args, "--set", f"engine.cache_dir={cache_root()}"]
    with tempfile.TemporaryDirectory() as scratch, \
            vscode.running_code_server(Path(scratch), server_args, SOURCE) as (url, workspace, env):
        env = {**env, "PHILS_DRIVE_TYPE": TYPED, "PHILS_DRIVE_ANCHOR": "circle_area"}
        run = subprocess.run([str(vscode.NODE_BIN / "node"), str(vscode.DRIVER), url, "sample.py", str(out),
                              str(Path(scratch) / "chromium")], env=env, capture_output=True, text=True, timeout=600)
        seen = json.loads(run.stdout.strip().splitlines()[-1])
        print(json.dumps({**seen, "saved": (workspace / "sample.py").read_text()}, indent=2))
    return 0 if "error" not in seen else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
