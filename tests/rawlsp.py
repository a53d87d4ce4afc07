"""The raw client, started the way the tests start servers (this checkout on PYTHONPATH)."""

from __future__ import annotations

from conftest import ROOT, server_env
from phils.tools.raw_client import RawServer as _RawServer


class RawServer(_RawServer):
    def __init__(self, *args: str):
        super().__init__(*args, env=server_env(), cwd=str(ROOT))
