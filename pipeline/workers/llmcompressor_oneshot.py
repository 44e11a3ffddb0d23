"""llm-compressor `oneshot` (runs in the llm-compressor env).

The modifiers come in the request, built by each variant kind's recipe model (as module, class name
and arguments), so a new scheme needs no edit here. Writes a compressed-tensors model directory
that vLLM loads, and reports wall time, peak memory and the hash of the calibration samples read.
"""

from __future__ import annotations

import hashlib
import importlib
import resource
import time
from pathlib import Path

from pipeline.workers.calibration import calibration_texts
from pipeline.workers.handoff import serve
from pipeline.workers.messages import OneshotRequest, OneshotResult


def _allow_cpu_only_pipelines() -> None:
    """llm-compressor pins intermediate tensors to page-locked memory (AWQ does), which needs an
    accelerator; on a CPU-only machine that raises 'Cannot access accelerator device', so pinning
    becomes a no-op there. It moves no value, so every scheme computes the same."""
    import torch
    from llmcompressor.pipelines import cache

    if not torch.cuda.is_available():
        cache.IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def _deterministic() -> None:
    """The same inputs make the same bytes: GPTQ's Hessians and AWQ's scale search accumulate over the
    calibration batches, so the order of the samples (drawn at random by default, from a generator
    seeded anew each process) changed the weights of some tensors run to run."""
    import random

    import numpy
    import torch

    random.seed(0)
    numpy.random.seed(0)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)


def quantize(request: OneshotRequest) -> OneshotResult:
    import llmcompressor
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(request.model_dir, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    recipe = [getattr(importlib.import_module(m.module), m.name)(**m.args) for m in request.modifiers]
    kwargs = {}
    calibration_sha = None
    if request.calibration is not None:
        texts = calibration_texts(request.calibration)
        calibration_sha = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        kwargs = {"dataset": Dataset.from_dict({"text": texts}), "num_calibration_samples": len(texts),
                  "max_seq_length": request.calibration.max_seq_len, "text_column": "text"}
    _allow_cpu_only_pipelines()
    _deterministic()
    # in the order read (llm-compressor otherwise draws them in a random order each run)
    oneshot(model=model, tokenizer=tokenizer, recipe=recipe, shuffle_calibration_samples=False, **kwargs)
    out = Path(request.out)
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    return OneshotResult(
        seconds=round(time.monotonic() - started, 2),
        n_params=n_params,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        calibration_sha256=calibration_sha,
        tool_versions={"llmcompressor_version": llmcompressor.__version__, "torch_version": torch.__version__},
    )


if __name__ == "__main__":
    serve(quantize)
