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


def stand_in_model(folder: Path) -> Path:
    """A model folder with a Llama config and a dummy weights file: enough for recipe checks and
    plan keys, which read shapes and hash files but load nothing."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                                                    "intermediate_size": 128, "num_hidden_layers": 2,
                                                    "num_attention_heads": 4}))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder
