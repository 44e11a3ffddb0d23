"""lm-eval against an OpenAI-compatible server that returns correct prompt logprobs (runs in the vLLM env).

First the alignment probe, server against itself: greedy tokens generated with their logprobs must be
the top-1, with the same logprobs, when the same sequence is scored with `echo`. Then lm-eval's
`local-completions` model runs each task (loglikelihoods and generation through the server; chat
templates rendered with the served model's tokenizer) with per-sample logging.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pipeline import retry
from pipeline.workers.alignment import PROBE_PROMPT, check_alignment
from pipeline.workers.handoff import serve
from pipeline.workers.lmeval_results import alignment_summary, run_tasks
from pipeline.workers.messages import EvalOutput, EvalRequest


def _token_id(token: str) -> int:
    return int(token.removeprefix("token_id:"))


def probe(base_url: str, api_key: str, model: str, n_predict: int = 12) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(headers=headers, timeout=300) as client:
        prompt = retry.post(f"{base_url}/tokenize", client=client,
                            json={"model": model, "prompt": PROBE_PROMPT}).json()["tokens"]
        gen = retry.post(f"{base_url}/v1/completions", client=client, json={
            "model": model, "prompt": prompt, "max_tokens": n_predict, "temperature": 0, "logprobs": 1,
            "ignore_eos": True, "return_tokens_as_token_ids": True}).json()["choices"][0]["logprobs"]
        generated = [{"id": _token_id(t), "logprob": float(lp)} for t, lp in zip(gen["tokens"], gen["token_logprobs"])]
        scored = retry.post(f"{base_url}/v1/completions", client=client, json={
            "model": model, "prompt": prompt + [g["id"] for g in generated], "max_tokens": 1, "temperature": 0,
            "echo": True, "logprobs": 2, "return_tokens_as_token_ids": True}).json()["choices"][0]["logprobs"]
    rows = []
    for j, g in enumerate(generated):
        position = len(prompt) + j
        top = sorted(((float(lp), _token_id(t)) for t, lp in (scored["top_logprobs"][position] or {}).items()),
                     reverse=True)
        rows.append({"top1_id": top[0][1], "top1_logprob": top[0][0],
                     "top2_logprob": top[1][0] if len(top) > 1 else top[0][0] - 99,
                     "token_logprob": float(scored["token_logprobs"][position])})
    return {**check_alignment(generated, rows), "server_tokens": generated, "scorer_rows": rows}


def completions_lm(**model_args: Any) -> Any:
    """lm-eval's `local-completions` with chat prompts rendered to text by the served model's own
    tokenizer: with `tokenized_requests=False` it would send the chat as a JSON message list, which
    a completions endpoint rejects (400). Everything else is lm-eval's own."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class ServedCompletions(LocalCompletionsAPI):
        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt)

    return ServedCompletions(**model_args)


def evaluate(request: EvalRequest) -> EvalOutput:
    started = time.monotonic()
    out = Path(request.out)
    alignment = probe(request.base_url, request.api_key, request.served_model)
    (out / "alignment_probe.json").write_text(json.dumps(alignment, indent=2))
    summary = alignment_summary(alignment)
    if not summary.passed:
        return EvalOutput(alignment=summary, tasks={}, seconds=round(time.monotonic() - started, 2))
    os.environ["OPENAI_API_KEY"] = request.api_key  # lm-eval's local-completions reads it from here
    # The served model's own tokenizer renders chat templates and counts context tokens.
    lm = completions_lm(
        model=request.served_model, base_url=f"{request.base_url}/v1/completions", tokenizer_backend="huggingface",
        tokenizer=request.model_path, tokenized_requests=False, num_concurrent=request.concurrency, max_retries=3,
        max_length=request.max_context)
    scores, version = run_tasks(lm, request.tasks, out, request.served_model)
    return EvalOutput(alignment=summary, tasks=scores, lm_eval_version=version, lm_eval_output="lm-eval",
                      seconds=round(time.monotonic() - started, 2))


if __name__ == "__main__":
    serve(evaluate)
