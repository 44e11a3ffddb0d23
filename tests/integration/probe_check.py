"""Run the alignment probe against a live llama-server twice: with the real scorer (must pass) and
with a scorer that reads logits one position late, as llama-cpp-python's echo does (must fail).

Usage (llama.cpp env): python -m tests.integration.probe_check MODEL.gguf BASE_URL API_KEY
"""

from __future__ import annotations

import json
import sys

import numpy as np

from pipeline.workers.llamacpp_scorer import InProcessScorer, probe


class ShiftedScorer(InProcessScorer):
    """Row i holds the distribution that predicts token i+2: each token is read one position late."""

    def logprob_rows(self, tokens, first=0):
        rows = super().logprob_rows(tokens, first)
        return np.vstack([rows[1:], rows[-1:]])


if __name__ == "__main__":
    model, base_url, api_key = sys.argv[1:4]
    real = probe(InProcessScorer(model, n_ctx=256, threads=1), base_url, api_key)
    shifted = probe(ShiftedScorer(model, n_ctx=256, threads=1), base_url, api_key)
    drop = ("server_tokens", "scorer_rows")
    print(json.dumps({"real": {k: v for k, v in real.items() if k not in drop},
                      "shifted": {k: v for k, v in shifted.items() if k not in drop}}))
