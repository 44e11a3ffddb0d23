"""Model source stage: resolve the recipe's model to a Hugging Face directory, cached by content.

A local directory is used in place; a GGUF file (on disk or inside a package) or a hub id is
materialised once under artifacts/models/<key>/ by a worker in the transformers environment.
"""

from __future__ import annotations

import hashlib
import importlib.util
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
        return ident, {"kind": "hf", "repo_id": source.repo_id, "revision": source.revision}
    if isinstance(source, LocalSource):
        return _dir_sha256(Path(source.path)), {}
    path = Path(source.path) if isinstance(source, GGUFSource) else package_file(source)
    assert isinstance(source, (GGUFSource, PackageFileSource)) and path is not None
    return sha256_file(path), {"kind": "gguf", "path": str(path)}


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
    if store.has(STAGE, key):
        return SourceResult(key, entry, sha, store.result(STAGE, key)["details"], cached=True)
    with store.building(STAGE, key) as scratch:
        model = env.run_worker("pipeline.workers.materialize", MaterializeRequest(**request, out=str(scratch)),
                               scratch, "materialize.log", timeout_s=timeout_s)
        details = asdict(model)
        write_json(scratch / RESULT_FILE, {"source_sha256": sha, "details": details})
    return SourceResult(key, entry, sha, details)
