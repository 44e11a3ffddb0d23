"""Prompt logprobs of given token ids from the llama.cpp reference, in-process (runs in the llama.cpp env)."""

from __future__ import annotations

from typing import Any

from pipeline.workers._io import serve_request
from pipeline.workers.lmeval_llamacpp import InProcessScorer


def token_logprobs(request: dict[str, Any]) -> dict[str, Any]:
    ids = request["token_ids"]
    scorer = InProcessScorer(request["model_path"], n_ctx=max(len(ids), 64), threads=request["threads"])
    rows = scorer.logprob_rows(ids)
    return {"token_logprobs": [float(rows[i - 1][ids[i]]) for i in range(1, len(ids))]}


if __name__ == "__main__":
    serve_request(token_logprobs)
