"""llm-compressor `oneshot` for one scheme (runs in the llm-compressor env).

Writes a compressed-tensors model directory that vLLM loads, and reports wall time, peak memory
and the calibration data's hash. Schemes: FP8_DYNAMIC (no calibration), W8A8 INT8 (SmoothQuant +
GPTQ), W4A16 with GPTQ, W4A16 with AWQ (followed by a QuantizationModifier, as 0.14 requires).
"""

from __future__ import annotations

import hashlib
import resource
import time
from pathlib import Path
from typing import Any

from pipeline.workers._io import serve_request
from pipeline.workers.calibration import builtin_texts, file_texts


def calibration_texts(spec: dict[str, Any]) -> list[str]:
    if spec["source"] == "builtin":
        texts = builtin_texts()
    elif spec["source"] == "file":
        texts = file_texts(Path(spec["path"]), spec.get("text_field", "text"))
    else:  # a hub dataset: needs a network or a warm datasets cache
        from datasets import load_dataset

        data = load_dataset(spec["dataset"], split=spec["split"])
        texts = [str(t) for t in data[spec.get("text_field", "text")] if str(t).strip()]
    if len(texts) < spec["samples"]:
        raise ValueError(f"calibration has {len(texts)} samples, {spec['samples']} asked")
    return texts[: spec["samples"]]


def _weight_groups(params: dict[str, Any], bits: int) -> dict[str, Any]:
    group_size = params.get("group_size")
    weights = {"num_bits": bits, "type": "int", "symmetric": params["symmetric"],
               "strategy": "group" if group_size else "channel"}
    if group_size:
        weights["group_size"] = group_size
    return {"group_0": {"targets": ["Linear"], "weights": weights}}


def build_recipe(scheme: str, params: dict[str, Any]) -> list[Any]:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    ignore = list(params.get("ignore", ["lm_head"]))
    if scheme == "fp8_dynamic":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=ignore)]
    if scheme == "w8a8_int8":
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=params["smoothing_strength"]),
                GPTQModifier(targets="Linear", scheme="W8A8", ignore=ignore, dampening_frac=params["dampening"])]
    if scheme == "w4a16_gptq":
        return [GPTQModifier(config_groups=_weight_groups(params, 4), ignore=ignore, dampening_frac=params["dampening"])]
    if scheme == "w4a16_awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(duo_scaling="both"), QuantizationModifier(config_groups=_weight_groups(params, 4), ignore=ignore)]
    raise ValueError(f"unknown scheme {scheme!r}")


def _allow_cpu_only_awq() -> None:
    """AWQ pins intermediate tensors to page-locked memory, which needs an accelerator; on a CPU-only
    machine that raises 'Cannot access accelerator device', so pinning becomes a no-op there."""
    import torch
    from llmcompressor.pipelines import cache

    if not torch.cuda.is_available():
        cache.IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def quantize(request: dict[str, Any]) -> dict[str, Any]:
    import llmcompressor
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    scheme, params = request["scheme"], request["params"]
    model = AutoModelForCausalLM.from_pretrained(request["model_dir"], dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(request["model_dir"])
    n_params = sum(p.numel() for p in model.parameters())
    kwargs: dict[str, Any] = {}
    calibration_sha = None
    if scheme != "fp8_dynamic":  # FP8_DYNAMIC computes activation scales at run time: no data needed
        texts = calibration_texts(request["calibration"])
        calibration_sha = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        kwargs = {"dataset": Dataset.from_dict({"text": texts}), "num_calibration_samples": len(texts),
                  "max_seq_length": request["calibration"]["max_seq_len"], "text_column": "text"}
    if scheme == "w4a16_awq":
        _allow_cpu_only_awq()
    oneshot(model=model, tokenizer=tokenizer, recipe=build_recipe(scheme, params), **kwargs)
    out = Path(request["out"])
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    return {
        "seconds": round(time.monotonic() - started, 2),
        "n_params": n_params,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "calibration_sha256": calibration_sha,
        "llmcompressor_version": llmcompressor.__version__,
        "torch_version": torch.__version__,
    }


if __name__ == "__main__":
    serve_request(quantize)
