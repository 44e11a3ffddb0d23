"""Secrets stay out of what a run keeps: logs, request files, MLflow params, tags and artifacts.

A secret is the value of an environment variable whose name says it is one (HF_TOKEN,
MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY, ...), a server API key this process made, or the
password in a URI. Tools get only the secrets they need: workers the hub token (a hub model or
dataset), servers none; tracking credentials never leave this process.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

MASK = "***"
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIALS?)(_[A-Z0-9]+)?$", re.IGNORECASE)
HUB_SECRETS = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
MIN_LENGTH = 6  # shorter values ("1", "true") would mask ordinary text
TEXT_LIMIT = 256 << 20  # logs and JSON; model weights are binary and skipped before this matters

_made: set[str] = set()  # API keys handed to servers by this process


def register(value: str) -> str:
    """Remember a secret this process made (a server's API key) so it is masked wherever it shows."""
    _made.add(value)
    return value


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def known(environ: dict[str, str] | None = None) -> list[str]:
    """Every secret value to mask, longest first (a token that contains another is masked whole)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v) >= MIN_LENGTH} | _made
    return sorted(values, key=len, reverse=True)


def without_secrets(environ: dict[str, str], keep: frozenset[str] = frozenset()) -> dict[str, str]:
    """The environment with every secret removed but those named in `keep`."""
    return {k: v for k, v in environ.items() if k in keep or not is_secret_name(k)}


def redact(text: str, values: list[str] | None = None) -> str:
    for value in known() if values is None else values:
        text = text.replace(value, MASK)
    return redact_uris(text)


URI_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+):([^@\s/]+)@", re.IGNORECASE)


def redact_uris(text: str) -> str:
    """`postgresql://user:pw@host/db` -> `postgresql://user:***@host/db`."""
    return URI_PASSWORD.sub(rf"\1:{MASK}@", text)


def _is_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        return b"\0" not in handle.read(8192)


def redact_file(path: Path, values: list[str] | None = None) -> bool:
    """Mask secrets in a text file in place (binary files and very large ones are left); True if changed."""
    values = known() if values is None else values
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > TEXT_LIMIT or not _is_text(path):
            return False
        text = path.read_text(errors="surrogateescape")
    except OSError:
        return False
    clean = redact(text, values)
    if clean == text:
        return False
    try:
        path.write_text(clean, errors="surrogateescape")
    except OSError:  # a full disk: a file that cannot be masked is not kept
        path.unlink(missing_ok=True)
    return True


def redact_tree(folder: Path) -> list[Path]:
    """Mask secrets in every text file under `folder`; returns the files that held one."""
    values = known()
    return [path for path in sorted(folder.rglob("*")) if redact_file(path, values)]


def copy_redacted(source: Path, target: Path) -> None:
    shutil.copy2(source, target)
    redact_file(target)
