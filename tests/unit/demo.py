"""The demo recipe as unit tests use it: its bundled tasks only. Its tasks named by path are looked
up in lm-eval's index in an engine environment (tests/integration/test_tasks.py, and the
shipped-recipe test once `make setup` has run); these tests are about everything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def demo_recipe() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    data["evals"]["tasks"] = [t for t in data["evals"]["tasks"] if isinstance(t, str)]
    return data
