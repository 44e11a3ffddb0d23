"""Materialise a model source as a Hugging Face model directory (runs in the transformers env).

A GGUF (on disk or inside a package) is dequantized by transformers; a hub id is downloaded (needs a
network or a warm cache). Weights are saved as bf16 safetensors with the tokenizer beside them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.workers.handoff import serve
from pipeline.workers.messages import MaterializedModel, MaterializeRequest


# llama.cpp pre-tokenizer name -> the Hugging Face pre_tokenizer it stands for. transformers rebuilds a
# GPT-2-style GGUF vocabulary with byte_fallback and a SentencePiece decoder, and without the
# pre-tokenizer's digit split: convert_hf_to_gguf.py then writes a broken "llama" vocabulary.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
HF_PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
}


def repair_gguf_bpe_tokenizer(gguf_path: Path, out: Path) -> None:
    """Restore a byte-level BPE tokenizer.json (and special tokens) from the GGUF's own metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_path).fields

    def field(name: str):
        return fields[name].contents() if name in fields else None

    if field("tokenizer.ggml.model") != "gpt2":
        return
    pre = field("tokenizer.ggml.pre")
    if pre not in HF_PRE_TOKENIZERS:
        raise ValueError(f"GGUF pre-tokenizer {pre!r} has no known Hugging Face equivalent"
                         f" (known: {', '.join(HF_PRE_TOKENIZERS)})")
    path = out / "tokenizer.json"
    spec = json.loads(path.read_text())
    spec["model"]["byte_fallback"] = False
    spec["pre_tokenizer"] = HF_PRE_TOKENIZERS[pre]
    spec["decoder"] = {**_BYTE_LEVEL, "add_prefix_space": True}
    path.write_text(json.dumps(spec, ensure_ascii=False, indent=1))
    tokens = field("tokenizer.ggml.tokens")
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    roles = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "pad": "padding_token_id"}
    for role, key in roles.items():
        token_id = field(f"tokenizer.ggml.{key}")
        if token_id is not None:
            config[f"{role}_token"] = tokens[token_id]
            config[f"{role}_token_id"] = int(token_id)
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2))
    for name in ("config.json", "generation_config.json"):  # the model's own idea of its special ids
        model_config_path = out / name
        if model_config_path.is_file():
            model_config = json.loads(model_config_path.read_text())
            for role in ("bos", "eos", "pad"):
                if field(f"tokenizer.ggml.{roles[role]}") is not None:
                    model_config[f"{role}_token_id"] = int(field(f"tokenizer.ggml.{roles[role]}"))
            model_config_path.write_text(json.dumps(model_config, indent=2))


def materialize(request: MaterializeRequest) -> MaterializedModel:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    out = Path(request.out)
    if request.kind == "gguf":
        assert request.path is not None
        gguf = Path(request.path)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The model is now plain float weights: drop the GGUF quantizer so it saves as a normal model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    elif request.kind == "hf":
        # No code from the repo is run (trust_remote_code stays off), and no pickle is loaded unless
        # the recipe allows it: a repo without safetensors fails here with transformers' message.
        model = AutoModelForCausalLM.from_pretrained(request.repo_id, revision=request.revision, dtype=torch.bfloat16,
                                                     use_safetensors=None if request.allow_pickle else True,
                                                     trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(request.repo_id, revision=request.revision, trust_remote_code=False)
    else:
        raise ValueError(f"nothing to materialise for source kind {request.kind!r}")
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if request.kind == "gguf":
        repair_gguf_bpe_tokenizer(gguf, out)
    config = model.config
    return MaterializedModel(
        architecture=type(model).__name__,
        hidden_size=config.hidden_size,
        intermediate_size=getattr(config, "intermediate_size", None),
        num_layers=config.num_hidden_layers,
        vocab_size=config.vocab_size,
        n_params=sum(p.numel() for p in model.parameters()),
        transformers_version=transformers.__version__,
        seconds=round(time.monotonic() - started, 2),
    )


if __name__ == "__main__":
    serve(materialize)
