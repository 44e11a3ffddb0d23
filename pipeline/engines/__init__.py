"""Serving engines: each starts a real OpenAI-compatible server on loopback and always stops it.

An `Engine` is a context manager exposing `base_url` and `api_key`; it is registered under the
`engine` name recipes use, so shared code never branches on which engine it is.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from pipeline.quantize import Artifact


class Engine(Protocol):
    name: str
    env: Any  # the ToolEnv its workers run in
    base_url: str
    api_key: str
    served_model: str
    eval_worker: str  # the worker module that runs lm-eval against this engine
    # in-process worker for next-token divergence vs the reference; None: measured while served,
    # from top-k prompt logprobs (the engine then has tokenize, prompt_top_logprobs, max_top_logprobs)
    divergence_worker: str | None
    scorer_threads: int
    ready_seconds: float | None

    def prompt_logprobs(self, token_ids: list[int], workdir: Any) -> list[float]: ...

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc: object) -> None: ...


# (artifact, recipe.engines, tool-environments root, artifacts root, server log path) -> Engine
EngineFactory = Callable[[Artifact, Any, Any, Any, Any], Engine]
_ENGINES: dict[str, EngineFactory] = {}


def register(name: str, factory: EngineFactory) -> None:
    _ENGINES[name] = factory


def engine_for(name: str) -> EngineFactory:
    return _ENGINES[name]
