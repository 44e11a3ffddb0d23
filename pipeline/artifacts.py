"""Content-addressed artifact store: a stage's key is the hash of everything that determines its output.

A finished entry is a directory `<root>/<stage>/<key>/` holding its files and `result.json`; it is
built in a temporary sibling and renamed into place, so a crash never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline.toolenv import ToolFailed

RESULT_FILE = "result.json"


def content_key(*parts: Any) -> str:
    """A stable 16-hex key over JSON-serialisable parts (dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    if is_dataclass(data):
        data = asdict(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class Store:
    """The artifacts tree, one folder per stage, one entry per content key.

    A build that failed for a tool's fault is not tried again by the same Store (one per run): a
    shared step, such as the F16 GGUF every quantized type starts from, fails once, and every
    variant that needs it is told so in one line."""

    def __init__(self, root: Path):
        self.root = root
        self.failed: dict[tuple[str, str], ToolFailed] = {}

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.entry(stage, key) / RESULT_FILE).is_file()

    def result(self, stage: str, key: str) -> dict[str, Any]:
        return read_json(self.entry(stage, key) / RESULT_FILE)

    def discard(self, stage: str, key: str) -> Path | None:
        """Move a finished entry to failed/ (its files kept for a look), so nothing reads it again."""
        entry = self.entry(stage, key)
        if not entry.exists():
            return None
        target = self.root / "failed" / f"{stage}-{key}-discarded-{time.strftime('%Y%m%dT%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        (entry / RESULT_FILE).unlink(missing_ok=True)  # first: a crash midway leaves no finished entry
        shutil.move(str(entry), target)
        return target

    @contextmanager
    def building(self, stage: str, key: str) -> Iterator[Path]:
        """Yield a scratch folder; on success it becomes the entry.

        On failure the folder moves to `<root>/failed/` (its logs explain why) and is never mistaken
        for a finished entry. The stage must write `result.json` into the folder last.
        """
        if earlier := self.failed.get((stage, key)):
            raise ToolFailed(f"{stage} {key} failed earlier in this run ({earlier.what})", earlier.log_path,
                             earlier.cause)
        final = self.entry(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.tmp-"))
        try:
            yield scratch
            if not (scratch / RESULT_FILE).is_file():
                raise RuntimeError(f"stage {stage} finished without writing {RESULT_FILE}")
            if final.exists():  # an older, unfinished entry (no result.json) from a crash
                shutil.rmtree(final)
            os.rename(scratch, final)
        except BaseException as exc:
            failed = self.root / "failed" / f"{stage}-{key}-{time.strftime('%Y%m%dT%H%M%S')}"
            failed.parent.mkdir(parents=True, exist_ok=True)
            (scratch / RESULT_FILE).unlink(missing_ok=True)
            shutil.move(str(scratch), failed)
            if isinstance(exc, ToolFailed):
                exc.relocate(scratch, failed)  # its log is there now
                self.failed[(stage, key)] = exc
            raise
