"""Serving engines: each starts a real OpenAI-compatible server on loopback and always stops it.

An `Engine` only serves: start, ready, stop. What it can answer besides text (prompt logprobs, top-k,
an in-process scorer) it declares in its spec's `Capabilities`; each measurement chooses its method
from those, so shared code never branches on which engine it is. One module per engine here, each
registering an `EngineSpec` (pipeline/specs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.specs import Capabilities
from pipeline.toolenv import ToolEnv


class Engine(Protocol):
    name: str
    base_url: str
    api_key: str
    served_model: str
    log_path: Path
    ready_seconds: float | None

    def check(self) -> None:
        """Raise ServerFailed unless the server is alive and healthy."""

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass
class EngineContext:
    """One engine for one artifact, as measurements see it: what it can answer, the environment its
    in-process tools run in, and, while it is being served, the running server."""

    name: str
    capabilities: Capabilities
    env: ToolEnv
    server: Engine | None = None

    def running(self) -> Engine:
        if self.server is None:
            raise RuntimeError(f"the {self.name} server is not running")  # our bug: a served step ran unserved
        return self.server
