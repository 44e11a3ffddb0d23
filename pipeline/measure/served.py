"""Prompt logprobs from a server that scores a prompt (`echo`), as vLLM's OpenAI API does with its
`return_tokens_as_token_ids` and `/tokenize` extensions: what engines declaring
`served_prompt_logprobs` answer, for engine parity and served divergence.
"""

from __future__ import annotations

from pipeline import retry
from pipeline.engines import Engine


class ServedLogprobs:
    def __init__(self, server: Engine, max_top_logprobs: int, timeout_s: float = 600):
        self.server = server
        self.max_top_logprobs = max_top_logprobs
        self.timeout_s = timeout_s

    def _post(self, path: str, body: dict) -> dict:
        response = retry.post(f"{self.server.base_url}{path}", headers={"Authorization": f"Bearer {self.server.api_key}"},
                              json={"model": self.server.served_model, **body}, timeout=self.timeout_s)
        response.raise_for_status()
        return response.json()

    def _echo(self, token_ids: list[int], k: int) -> dict:
        """Prompt logprobs of `token_ids` (position 0 has none), aligned: P(t_i | t_<i)."""
        return self._post("/v1/completions", {"prompt": token_ids, "max_tokens": 1, "temperature": 0, "echo": True,
                                              "logprobs": k, "return_tokens_as_token_ids": True})["choices"][0]["logprobs"]

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """log P(t_i | t_<i) for i ≥ 1."""
        return [float(x) for x in self._echo(token_ids, 0)["token_logprobs"][1:len(token_ids)]]

    def prompt_top_logprobs(self, token_ids: list[int], k: int) -> list[tuple[float, dict[int, float]]]:
        """For i ≥ 1: (log P(t_i | t_<i), the top-k logprobs there with t_i's own added)."""
        data = self._echo(token_ids, k)
        return [(float(lp), {int(t.removeprefix("token_id:")): float(v) for t, v in top.items()})
                for lp, top in zip(data["token_logprobs"][1:len(token_ids)], data["top_logprobs"][1:len(token_ids)])]

    def tokenize(self, text: str) -> list[int]:
        return self._post("/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]
