"""Next-token divergence of a GGUF variant vs its reference, from full logits (runs in the llama.cpp env).

Both models are loaded side by side and fed the same token windows; per position we take the full
vocabulary distributions, so KL(reference || variant) is exact, not bounded from top-k logprobs.
The price is a reference forward pass per variant (the reference's logits are never stored: a
window of 512 tokens over a 49k vocabulary is 100 MB).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.workers._io import serve_request
from pipeline.workers.divergence_summary import summarize


def _log_softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def divergence(request: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp
    import numpy as np

    started = time.monotonic()
    window = int(request["window_tokens"])

    def load(path: str):
        return llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=window, n_batch=window, n_ubatch=window,
                               n_threads=request["threads"], n_threads_batch=request["threads"], verbose=False)

    reference, variant = load(request["reference_path"]), load(request["variant_path"])
    text = Path(request["text_path"]).read_text()
    tokens = reference.tokenize(text.encode(), add_bos=False, special=False)
    if variant.tokenize(text.encode(), add_bos=False, special=False) != tokens:
        raise ValueError("reference and variant tokenize the divergence text differently: not comparable")
    windows = [tokens[i:i + window] for i in range(0, len(tokens) - window + 1, window)][: request["windows"]]
    if not windows:
        raise ValueError(f"divergence text has {len(tokens)} tokens, fewer than one window of {window}")

    kld_all, agree, nll_ref, nll_var = [], 0, 0.0, 0.0
    for chunk in windows:
        rows = []
        for llm in (reference, variant):
            llm.reset()
            llm.eval(chunk)
            rows.append(_log_softmax(np.asarray(llm.scores[: len(chunk)], dtype=np.float64)))
        ref_rows, var_rows = rows[0][:-1], rows[1][:-1]  # the last position has no next token to score
        kld = (np.exp(ref_rows) * (ref_rows - var_rows)).sum(axis=1)
        kld_all.append(np.maximum(kld, 0.0))  # tiny negatives are float rounding of an exact 0
        agree += int((ref_rows.argmax(axis=1) == var_rows.argmax(axis=1)).sum())
        targets = np.asarray(chunk[1:])
        positions = np.arange(len(targets))
        nll_ref -= float(ref_rows[positions, targets].sum())
        nll_var -= float(var_rows[positions, targets].sum())
    return {
        **summarize(np.concatenate(kld_all), agree, nll_ref, nll_var),
        "windows": len(windows),
        "window_tokens": window,
        "method": "full-vocabulary logits, both models in-process (llama.cpp), non-overlapping windows",
        "seconds": round(time.monotonic() - started, 2),
    }


if __name__ == "__main__":
    serve_request(divergence)
