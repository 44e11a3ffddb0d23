"""The recipe's calibration data as the quantizers key it and hand it to their workers: the same
texts for llm-compressor's schemes and llama.cpp's importance matrix."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline.artifacts import sha256_file
from pipeline.recipe.schema import CalibrationConfig
from pipeline.workers.calibration import builtin_texts
from pipeline.workers.messages import CalibrationData


def calibration_fingerprint(config: CalibrationConfig) -> dict[str, Any]:
    if config.source == "builtin":
        data = hashlib.sha256("\0".join(builtin_texts()).encode()).hexdigest()
    elif config.source == "file":
        path = Path(config.path)  # type: ignore[arg-type]
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        data = hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()
    else:
        data = f"{config.dataset}:{config.split}"
    return {**config.model_dump(mode="json", exclude={"path"}), "data": data}


def calibration_data(config: CalibrationConfig) -> CalibrationData:
    return CalibrationData(source=config.source, samples=config.samples, max_seq_len=config.max_seq_len,
                           text_field=config.text_field, path=str(config.path) if config.path else None,
                           dataset=config.dataset, split=config.split)
