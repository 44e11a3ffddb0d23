"""Prompt logprobs of a token sequence under transformers (runs in the transformers env, CPU, float32).

The engine-parity check compares each engine's reference with this: the model as its authors'
library computes it, on the same token ids.
"""

from __future__ import annotations

import time

from pipeline.workers.handoff import serve
from pipeline.workers.messages import TokenLogprobs, TransformersLogprobsRequest


def logprobs(request: TransformersLogprobsRequest) -> TokenLogprobs:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
    text = open(request.text_path).read()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: request.tokens]
    model = AutoModelForCausalLM.from_pretrained(request.model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    rows = torch.log_softmax(logits, dim=-1)
    token_logprobs = [float(rows[i - 1, ids[i]]) for i in range(1, len(ids))]
    return TokenLogprobs(token_ids=ids, token_logprobs=token_logprobs, seconds=round(time.monotonic() - started, 2))


if __name__ == "__main__":
    serve(logprobs)
