"""llama.cpp's in-process scorer (runs in the llama.cpp env): the same GGUF file and ggml kernels as
the server, with full-vocabulary logits, answering the requests a served llama.cpp cannot.

Neither llama.cpp server returns correct prompt logprobs (llama-cpp-python's `echo` is shifted by one
position, llama-server ignores `echo`), so loglikelihoods are scored here and generation goes to the
running llama-server. Before any number counts, an alignment probe checks the scorer against the
server: tokens the server generated greedily must be the scorer's top-1 at the same positions, with
matching logprobs. Three requests:
- `EvalRequest`: lm-eval tasks (loglikelihoods here, generation on the server), per-sample results;
- `DivergenceRequest`: exact KL vs the reference, both models loaded side by side on the same
  windows (the reference's logits are never stored: 512 tokens × 49k vocabulary is 100 MB a window);
- `ScorerLogprobsRequest`: prompt logprobs of given token ids (engine parity).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline import retry
from pipeline.workers.alignment import PROBE_PROMPT, check_alignment
from pipeline.workers.divergence_summary import summarize
from pipeline.workers.handoff import serve
from pipeline.workers.lmeval_results import alignment_summary, run_tasks
from pipeline.workers.messages import (DivergenceMetrics, DivergenceRequest, EvalOutput, EvalRequest,
                                       ScorerLogprobsRequest, TokenLogprobs)


# ggml's type numbers (ggml/include/ggml.h of the vendored llama.cpp) of the cache types llama-server
# takes by name; llama-cpp-python takes the numbers
GGML_CACHE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20,
                    "bf16": 30}


def cache_options(kv_cache: list[str] | None) -> dict[str, Any]:
    """llama_cpp.Llama's arguments for the server's [K, V] cache types: none for its f16 default (as
    before the setting existed); else both types, with flash attention, as the server runs them."""
    if not kv_cache:
        return {}
    k, v = kv_cache
    return {"type_k": GGML_CACHE_TYPES[k], "type_v": GGML_CACHE_TYPES[v], "flash_attn": True}


class InProcessScorer:
    """Prompt logprobs from llama.cpp's full logits, computed where they belong: P(t_i | t_<i)."""

    def __init__(self, model_path: str, n_ctx: int, threads: int, kv_cache: list[str] | None = None):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=model_path, logits_all=True, n_ctx=n_ctx, n_batch=min(n_ctx, 512),
                                   n_threads=threads, n_threads_batch=threads, verbose=False, **cache_options(kv_cache))
        self.n_ctx = n_ctx
        self.add_bos = bool(self.llm._model.add_bos_token()) if hasattr(self.llm._model, "add_bos_token") else False
        self.bos = self.llm.token_bos()
        self.eos = self.llm.token_eos()

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=False)

    def logprob_rows(self, tokens: list[int], first: int = 0):
        """Log-softmax over the vocabulary at positions first.. of `tokens` (row i predicts token i+1)."""
        import numpy as np

        # Reuse the longest common prefix with the previous sequence (the choices of one item share
        # their context): its KV entries and logit rows are still valid; eval() drops the rest.
        previous = self.llm.input_ids[: self.llm.n_tokens]
        prefix = 0
        for old, new in zip(previous, tokens):
            if old != new:
                break
            prefix += 1
        self.llm.n_tokens = min(prefix, len(tokens) - 1)
        self.llm.eval(tokens[self.llm.n_tokens:])
        logits = np.asarray(self.llm.scores[first: len(tokens)], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def continuation_logprob(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        tokens = context + continuation
        if len(tokens) > self.n_ctx:  # keep the end: the continuation and the context nearest to it
            tokens = tokens[-self.n_ctx:]
        start = len(tokens) - len(continuation)
        rows = self.logprob_rows(tokens, first=start - 1)  # only the rows that predict the continuation
        total, greedy = 0.0, True
        for j, token in enumerate(continuation):
            row = rows[j]
            total += float(row[token])
            greedy = greedy and int(row.argmax()) == token
        return total, greedy


def probe(scorer: InProcessScorer, base_url: str, api_key: str, n_predict: int = 12) -> dict[str, Any]:
    prompt = ([scorer.bos] if scorer.add_bos else []) + scorer.tokenize(PROBE_PROMPT)
    response = retry.post(
        f"{base_url}/completion",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"prompt": prompt, "n_predict": n_predict, "temperature": 0, "top_k": 1, "n_probs": 2,
              "cache_prompt": False, "ignore_eos": True},
        timeout=120,
    )
    response.raise_for_status()
    generated = [{"id": int(p["id"]), "logprob": float(p["logprob"])}
                 for p in response.json()["completion_probabilities"]]
    rows = scorer.logprob_rows(prompt + [g["id"] for g in generated], first=len(prompt) - 1)
    scorer_rows = []
    for j, g in enumerate(generated):
        row = rows[j]
        top = row.argsort()[::-1][:2]
        scorer_rows.append({"top1_id": int(top[0]), "top1_logprob": float(row[top[0]]),
                            "top2_logprob": float(row[top[1]]), "token_logprob": float(row[g["id"]])})
    verdict = check_alignment(generated, scorer_rows)
    return {**verdict, "server_tokens": generated, "scorer_rows": scorer_rows}


def make_lm(scorer: InProcessScorer, base_url: str, api_key: str, concurrency: int = 1):
    import httpx
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    template = scorer.llm.metadata.get("tokenizer.chat_template")

    class LlamaCppInProcessLM(TemplateLM):
        """lm-eval's three calls: loglikelihoods in-process, generation through llama-server; chat
        templates rendered from the GGUF's own (as llama.cpp does), generation from the rendered text."""

        def __init__(self):
            super().__init__()

        @property
        def eot_token_id(self) -> int:
            return scorer.eos

        @property
        def prefix_token_id(self) -> int:
            return scorer.bos if scorer.add_bos else scorer.eos

        @property
        def tokenizer_name(self) -> str:
            return "llamacpp-gguf"

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return template if chat_template else None

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            if not template:
                raise ValueError("the GGUF holds no chat template (tokenizer.chat_template)")
            token = lambda i: scorer.llm.detokenize([i], special=True).decode(errors="replace")  # noqa: E731
            formatter = Jinja2ChatFormatter(template, eos_token=token(scorer.eos), bos_token=token(scorer.bos),
                                            add_generation_prompt=add_generation_prompt)
            return formatter(messages=chat_history).prompt

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return scorer.tokenize(string)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            bos = [scorer.bos] if scorer.add_bos else []
            # Score in token order so requests sharing a context run back to back (prefix reuse),
            # then return results in the order lm-eval asked.
            order = sorted(range(len(requests)), key=lambda i: requests[i][1] + requests[i][2])
            results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
            for i in order:
                _, context, continuation = requests[i]
                results[i] = scorer.continuation_logprob(bos + context, continuation)
            return results

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            out = []
            for (text,) in [r.args for r in requests]:
                windows = map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=scorer.n_ctx, context_len=1))
                out.append(sum(scorer.continuation_logprob(list(ctx), list(cont))[0] for ctx, cont in windows))
            return out

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from concurrent.futures import ThreadPoolExecutor

            with httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=300) as client:
                def generate(args) -> str:
                    context, gen_kwargs = args
                    until = gen_kwargs.get("until") or []
                    body = {"prompt": context, "n_predict": int(gen_kwargs.get("max_gen_toks", 256)),
                            "temperature": 0, "top_k": 1, "stop": until if isinstance(until, list) else [until],
                            "cache_prompt": False}
                    response = retry.post(f"{base_url}/completion", client=client, json=body)
                    response.raise_for_status()
                    return response.json()["content"]

                # as many in flight as the server has slots; results in the order lm-eval asked
                with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                    return list(pool.map(generate, [r.args for r in requests]))

    return LlamaCppInProcessLM()


def evaluate(request: EvalRequest) -> EvalOutput:
    started = time.monotonic()
    out = Path(request.out)
    scorer = InProcessScorer(request.model_path, n_ctx=request.max_context, threads=request.threads,
                             kv_cache=request.kv_cache)
    alignment = probe(scorer, request.base_url, request.api_key)
    (out / "alignment_probe.json").write_text(json.dumps(alignment, indent=2))
    summary = alignment_summary(alignment)
    if not summary.passed:
        # A misaligned scorer must never produce a number: report the failure instead.
        return EvalOutput(alignment=summary, tasks={}, seconds=round(time.monotonic() - started, 2))
    lm = make_lm(scorer, request.base_url, request.api_key, request.concurrency)
    scores, version = run_tasks(lm, request.tasks, out, request.served_model)
    return EvalOutput(alignment=summary, tasks=scores, lm_eval_version=version, lm_eval_output="lm-eval",
                      seconds=round(time.monotonic() - started, 2))


def _log_softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def divergence(request: DivergenceRequest) -> DivergenceMetrics:
    import llama_cpp
    import numpy as np

    started = time.monotonic()
    window = request.window_tokens

    def load(path: str, **options: Any):
        return llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=window, n_batch=window, n_ubatch=window,
                               n_threads=request.threads, n_threads_batch=request.threads, verbose=False, **options)

    # A variant with a quantized KV cache runs flash attention; so does its reference here, with its
    # f16 cache, so the divergence is the cache's and the weights', not the attention kernel's.
    variant_options = cache_options(request.kv_cache)
    reference = load(request.reference_path, flash_attn=variant_options.get("flash_attn", False))
    variant = load(request.variant_path, **variant_options)
    text = Path(request.text_path).read_text()
    tokens = reference.tokenize(text.encode(), add_bos=False, special=False)
    if variant.tokenize(text.encode(), add_bos=False, special=False) != tokens:
        raise ValueError("reference and variant tokenize the divergence text differently: not comparable")
    windows = [tokens[i:i + window] for i in range(0, len(tokens) - window + 1, window)][: request.windows]
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
    return DivergenceMetrics(
        **summarize(np.concatenate(kld_all), agree, nll_ref, nll_var),
        windows=len(windows),
        window_tokens=window,
        method="full-vocabulary logits, both models in-process (llama.cpp), non-overlapping windows",
        seconds=round(time.monotonic() - started, 2),
    )


def token_logprobs(request: ScorerLogprobsRequest) -> TokenLogprobs:
    started = time.monotonic()
    ids = request.token_ids
    scorer = InProcessScorer(request.model_path, n_ctx=max(len(ids), 64), threads=request.threads,
                             kv_cache=request.kv_cache)
    rows = scorer.logprob_rows(ids)
    return TokenLogprobs(token_ids=ids, token_logprobs=[float(rows[i - 1][ids[i]]) for i in range(1, len(ids))],
                         seconds=round(time.monotonic() - started, 2))


if __name__ == "__main__":
    serve(evaluate, divergence, token_logprobs)
