"""Build a tiny random Llama for tests (runs in the transformers env): the demo model's real tokenizer,
2 layers of width 256 (multiples of 256, so k-quants apply rather than fall back), seeded weights.

Usage: python -m tests.integration.build_tiny_model OUT_DIR TOKENIZER_GGUF
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from pipeline.workers.materialize import repair_gguf_bpe_tokenizer


def build(out: Path, tokenizer_gguf: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_gguf.parent, gguf_file=tokenizer_gguf.name)
    tokenizer.save_pretrained(out)
    repair_gguf_bpe_tokenizer(tokenizer_gguf, out)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        initializer_range=0.08,  # peakier than the default 0.02, so greedy tokens are not all near-ties
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
