"""Content-addressed artifact store: a stage's key is the hash of everything that determines its output.

A finished entry is a directory `<root>/<stage>/<key>/` holding its files, `result.json` and
`checksums.json`; it is built in a temporary sibling and renamed into place, so a crash never leaves
a half-written entry. A build holds a lock on its key (two runs never build one entry at once, and a
finished entry is never replaced), and an entry is reused only once its checksums verify.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline import secrecy
from pipeline.toolenv import ToolFailed

RESULT_FILE = "result.json"
CHECKSUMS_FILE = "checksums.json"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


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
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file + rename): a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
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
    variant that needs it is told so in one line. An entry whose files no longer match its checksums
    (changed, truncated, or missing) is moved to failed/ when first read, and made again."""

    def __init__(self, root: Path, say: Callable[[str], None] = lambda _: None, verify: bool = True,
                 force: frozenset[str] = frozenset()):
        self.root = root
        self.say = say
        self.verify = verify  # False for `plan`, which only reports what exists
        self.force = force  # stages whose entries this run makes again (each once), replacing the old
        self.failed: dict[tuple[str, str], ToolFailed] = {}
        self.verified: set[tuple[str, str]] = set()
        self._held: set[tuple[str, str]] = set()

    def entry(self, stage: str, key: str) -> Path:
        for part in (stage, key):  # nothing a recipe or a file says can lead outside the store
            if not KEY_PATTERN.match(part) or part.strip(".") == "":
                raise ValueError(f"not a store name: {part!r}")
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        """Whether a finished entry exists, and (verifying stores) its files are those it was made with."""
        if not (self.entry(stage, key) / RESULT_FILE).is_file():
            return False
        if stage in self.force and (stage, key) not in self.verified:
            return False  # made again by this run; the old entry stays until the new one is finished
        if not self.verify or (stage, key) in self.verified:
            return True
        entry = self.entry(stage, key)
        if not (entry / CHECKSUMS_FILE).exists():  # finished before entries were checksummed: adopted once
            write_json(entry / CHECKSUMS_FILE, {"files": checksums(entry), "adopted": True})
            self.say(f"{stage}/{key}: made before entries were checksummed; its checksums are recorded now")
        elif problem := self.damage(stage, key):
            moved = self.discard(stage, key, "damaged")
            self.say(f"{stage}/{key}: {problem}; not used, moved to {moved}; made again")
            return False
        elif not self.untouched(stage, key):  # written since, yet the same bytes: trusted again by `untouched`
            stamp = max([time.time_ns()] + [p.stat().st_mtime_ns for p in entry.rglob("*") if p.is_file()])
            os.utime(entry / CHECKSUMS_FILE, ns=(stamp, stamp))
        self.verified.add((stage, key))
        return True

    def damage(self, stage: str, key: str) -> str | None:
        """What is wrong with a finished entry's files, or None when every one matches its checksum."""
        entry = self.entry(stage, key)
        try:
            listed = read_json(entry / CHECKSUMS_FILE)["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"{CHECKSUMS_FILE} is not readable (damaged)"
        for name, expected in sorted(listed.items()):
            path = entry / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != expected["bytes"]:
                return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} when made (truncated or changed)"
            if sha256_file(path) != expected["sha256"]:
                return f"{name} does not match its sha256 (changed since it was made)"
        return None

    def untouched(self, stage: str, key: str) -> bool:
        """Whether a finished entry's files are all there, the sizes they were made with, and none
        written since its checksums were: the check a run that reuses nothing can afford (stat calls,
        no hashing); any doubt sends it down the path that hashes."""
        entry = self.entry(stage, key)
        try:
            if not (entry / RESULT_FILE).is_file():
                return False
            recorded = (entry / CHECKSUMS_FILE).stat().st_mtime_ns
            for name, expected in read_json(entry / CHECKSUMS_FILE)["files"].items():
                status = (entry / name).stat()
                if status.st_size != expected["bytes"] or status.st_mtime_ns > recorded:
                    return False
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True

    def result(self, stage: str, key: str) -> dict[str, Any]:
        return read_json(self.entry(stage, key) / RESULT_FILE)

    def discard(self, stage: str, key: str, why: str = "discarded") -> Path | None:
        """Move a finished entry to failed/ (its files kept for a look), so nothing reads it again."""
        entry = self.entry(stage, key)
        if not entry.exists():
            return None
        target = self._failed_folder(f"{stage}-{key}-{why}")
        (entry / RESULT_FILE).unlink(missing_ok=True)  # first: a crash midway leaves no finished entry
        shutil.move(str(entry), target)
        self.verified.discard((stage, key))
        return target

    @contextmanager
    def lock(self, stage: str, key: str, waiting: str | None = None) -> Iterator[None]:
        """Hold `key`'s lock: one builder at a time across processes. The OS drops it when its holder
        dies, so a killed run never leaves a key locked. Re-entrant within this Store. `waiting`: what
        to say while another process holds it."""
        if (stage, key) in self._held:
            yield
            return
        path = self.entry(stage, key).parent / f".{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by tools and servers
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(waiting or f"{stage}/{key} is being made by another run; waiting for it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.add((stage, key))
            yield
        finally:
            self._held.discard((stage, key))
            os.close(fd)

    @contextmanager
    def building(self, stage: str, key: str) -> Iterator[Path]:
        """Yield a scratch folder; on success it becomes the entry, with its checksums.

        On failure the folder moves to `<root>/failed/` (its logs explain why) and is never mistaken
        for a finished entry. The stage must write `result.json` into the folder last. Callers that
        check `has` first should hold `lock` across the check and the build, so that a second run
        waits and then reuses the entry instead of making it again.
        """
        if earlier := self.failed.get((stage, key)):
            raise ToolFailed(f"{stage} {key} failed earlier in this run ({earlier.what})", earlier.log_path,
                             earlier.cause)
        with self.lock(stage, key):
            final = self.entry(stage, key)
            self._clear_abandoned(stage, key)
            scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.tmp-"))
            try:
                yield scratch
                if not (scratch / RESULT_FILE).is_file():
                    raise RuntimeError(f"stage {stage} finished without writing {RESULT_FILE}")
                secrecy.redact_tree(scratch)
                write_json(scratch / CHECKSUMS_FILE, {"files": checksums(scratch)})
                if (final / RESULT_FILE).is_file():
                    if stage not in self.force:  # made meanwhile by a caller that did not lock: keep it
                        shutil.rmtree(scratch)
                        return
                    self.discard(stage, key, "replaced")  # forced: the old one goes once the new one is made
                elif final.exists():  # an unfinished entry (no result.json) from a crash
                    shutil.rmtree(final)
                os.rename(scratch, final)
                self.verified.add((stage, key))
            except BaseException as exc:
                failed = self._failed_folder(f"{stage}-{key}")
                (scratch / RESULT_FILE).unlink(missing_ok=True)
                shutil.move(str(scratch), failed)  # a rename: it needs no space on a full disk
                secrecy.redact_tree(failed)
                if isinstance(exc, OSError) and exc.errno in DISK_FULL:  # the host's fault, not ours
                    exc = ToolFailed(f"{stage} {key}: disk full while writing {exc.filename or 'a file'}", cause="")
                    exc.__cause__ = None
                if isinstance(exc, ToolFailed):
                    exc.relocate(scratch, failed)  # its log is there now
                    self.failed[(stage, key)] = exc
                    raise exc from None
                raise

    def _clear_abandoned(self, stage: str, key: str) -> None:
        """Scratch folders of `key` left by a run that died (a killed machine): with the lock held
        nobody is building them, so they move to failed/ (their logs may say why)."""
        for scratch in self.entry(stage, key).parent.glob(f".{key}.tmp-*"):
            target = self._failed_folder(f"{stage}-{key}-abandoned")
            shutil.move(str(scratch), target)
            secrecy.redact_tree(target)

    def _failed_folder(self, name: str) -> Path:
        folder = self.root / "failed"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder`, by relative path (what `Store.damage` checks)."""
    return {str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != CHECKSUMS_FILE}
