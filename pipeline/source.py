"""Model source stage: resolve the recipe's model to a Hugging Face directory, cached by content.

A local directory is used in place; a GGUF file (on disk or inside a package) or a hub id is
materialised once under artifacts/models/<key>/ by a worker in the transformers environment.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, sha256_file, write_json
from pipeline.recipe.schema import GGUFSource, HubSource, LocalSource, ModelSource, PackageFileSource
from pipeline.toolenv import ToolEnv
from pipeline.workers.messages import MaterializeRequest

STAGE = "models"


@dataclass(frozen=True)
class SourceResult:
    key: str
    model_dir: Path
    source_sha256: str
    details: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def package_file(source: PackageFileSource) -> Path | None:
    """The file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / source.path
        if candidate.is_file():
            return candidate
    return None


def source_fingerprint(source: ModelSource) -> tuple[str, dict[str, Any]]:
    """(sha256 of the source's bytes or identity, what the materialise worker needs to know)."""
    if isinstance(source, HubSource):
        ident = hashlib.sha256(f"{source.repo_id}@{source.revision}".encode()).hexdigest()
        return ident, {"kind": "hf", "repo_id": source.repo_id, "revision": source.revision,
                       "allow_pickle": source.allow_pickle}
    if isinstance(source, LocalSource):
        return _dir_sha256(Path(source.path)), {}
    path = Path(source.path) if isinstance(source, GGUFSource) else package_file(source)
    assert isinstance(source, (GGUFSource, PackageFileSource)) and path is not None
    return sha256_file(path), {"kind": "gguf", "path": str(path)}


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def unsafe_model_dir(root: Path, allow_pickle: bool) -> str | None:
    """Why a local model directory is not loaded as it is, or None. Loading a pickle checkpoint can
    run code hidden in it, and a config with `auto_map` asks to run the repo's own Python: quantgate
    does neither unless told (pickles: `allow_pickle`; remote code: never)."""
    config = root / "config.json"
    try:
        auto_map = json.loads(config.read_text()).get("auto_map")
    except (OSError, ValueError, AttributeError):
        auto_map = None
    if auto_map:
        return (f"{config} has auto_map ({', '.join(sorted(auto_map))}): the model needs code from its own repo,"
                " which quantgate never runs (trust_remote_code stays off); use an architecture transformers ships")
    if any(root.glob("*.safetensors")) or allow_pickle:
        return None
    pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        return (f"{root} holds pickle checkpoints only ({', '.join(pickles[:3])}); loading one can run code hidden"
                " in it. Convert it to safetensors, or set model.allow_pickle: true if you trust its origin")
    return None


def _dir_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def run(source: ModelSource, store: Store, env: ToolEnv, timeout_s: float) -> SourceResult:
    sha, request = source_fingerprint(source)
    key = content_key("source", sha)
    if isinstance(source, LocalSource):
        return SourceResult(key, Path(source.path), sha, cached=True)
    entry = store.entry(STAGE, key)
    with store.lock(STAGE, key):  # a second run waits, then reuses
        if store.has(STAGE, key):
            return SourceResult(key, entry, sha, store.result(STAGE, key)["details"], cached=True)
        with store.building(STAGE, key) as scratch:
            model = env.run_worker("pipeline.workers.materialize", MaterializeRequest(**request, out=str(scratch)),
                                   scratch, "materialize.log", timeout_s=timeout_s)
            details = asdict(model)
            write_json(scratch / RESULT_FILE, {"source_sha256": sha, "details": details})
    return SourceResult(key, entry, sha, details)
