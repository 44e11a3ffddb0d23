"""Divergence from served top-k prompt logprobs: the estimator against exact KL, and the
collect-once / compare-later flow (with a stand-in engine: this tests the bookkeeping, not vLLM)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.artifacts import Store
from pipeline.measure import NotMeasurable, divergence
from pipeline.recipe.schema import DivergenceConfig

VOCAB = 400
ENGINE = {"engine": "stand-in", "build": "stand-in==1", "settings": {}}  # the engine's part of the keys


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def positions(rows: np.ndarray, targets: np.ndarray, k: int) -> list[tuple[float, dict[int, float]]]:
    """What a server returns: the target's logprob and the top-k with the target added."""
    out = []
    for row, target in zip(rows, targets):
        top = {int(t): float(row[t]) for t in np.argsort(-row)[:k]}
        top[int(target)] = float(row[target])
        out.append((float(row[target]), top))
    return out


def exact_kld(ref: np.ndarray, var: np.ndarray) -> float:
    return float((np.exp(ref) * (ref - var)).sum(axis=1).mean())


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    ref = log_softmax(rng.normal(0, 3, (300, VOCAB)))
    var = log_softmax(ref + rng.normal(0, 0.3, ref.shape))
    targets = rng.integers(0, VOCAB, 300)
    return ref, var, targets


def test_identical_servers_give_zero(pair):
    ref, _, targets = pair
    m = divergence.topk_metrics([positions(ref, targets, 20)], [positions(ref, targets, 20)], 20)
    assert m["kld_mean"] == 0 and m["flip_rate"] == 0 and m["ppl_ratio"] == 1


def test_full_vocabulary_top_k_is_exact(pair):
    ref, var, targets = pair
    m = divergence.topk_metrics([positions(ref, targets, VOCAB)], [positions(var, targets, VOCAB)], VOCAB)
    assert m["kld_mean"] == pytest.approx(exact_kld(ref, var), rel=1e-9)
    assert m["reference_tail_mass"] == pytest.approx(0, abs=1e-9)


def test_truncated_top_k_estimates_exact_kl_and_keeps_flips_and_perplexity_exact(pair):
    ref, var, targets = pair
    m = divergence.topk_metrics([positions(ref, targets, 20)], [positions(var, targets, 20)], 20)
    exact = exact_kld(ref, var)
    assert 0.5 * exact < m["kld_mean"] < 1.5 * exact
    assert m["reference_tail_mass"] > 0.01  # this synthetic vocabulary has a real tail
    assert m["flip_rate"] == pytest.approx(float((ref.argmax(1) != var.argmax(1)).mean()))
    nll = lambda rows: -rows[np.arange(len(targets)), targets].mean()  # noqa: E731
    assert m["ppl_ratio"] == pytest.approx(np.exp(nll(var) - nll(ref)))


def test_larger_divergence_scores_larger(pair):
    ref, var, targets = pair
    rng = np.random.default_rng(1)
    worse = log_softmax(ref + rng.normal(0, 1.0, ref.shape))
    mild = divergence.topk_metrics([positions(ref, targets, 20)], [positions(var, targets, 20)], 20)
    bad = divergence.topk_metrics([positions(ref, targets, 20)], [positions(worse, targets, 20)], 20)
    assert bad["kld_mean"] > 3 * mild["kld_mean"] and bad["flip_rate"] > mild["flip_rate"]


class ServedModel:
    """Stand-in for a served engine: fixed next-token distributions over a small vocabulary."""

    max_top_logprobs = 20

    def __init__(self, noise: float, seed: int = 0, tokenizer_shift: int = 0):
        self.noise, self.seed, self.shift, self.calls = noise, seed, tokenizer_shift, 0

    def tokenize(self, text: str) -> list[int]:
        return [(ord(c) + self.shift) % VOCAB for c in text]

    def prompt_top_logprobs(self, token_ids: list[int], k: int):
        self.calls += 1
        base = np.random.default_rng(sum(token_ids) % 997).normal(0, 3, (len(token_ids), VOCAB))
        rows = log_softmax(base + np.random.default_rng(self.seed).normal(0, self.noise, base.shape))
        return positions(rows[:-1], np.asarray(token_ids[1:]), k)


@pytest.fixture
def config(tmp_path) -> DivergenceConfig:
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20)
    return DivergenceConfig(text=str(text), windows=2, window_tokens=64)


def test_reference_is_collected_once_then_variants_compare_with_it(tmp_path, config):
    store = Store(tmp_path / "artifacts")
    reference = ServedModel(noise=0)
    own = divergence.run_served(config, reference, "ref", "ref", store, ENGINE)
    assert own.kld_mean == 0 and own.n_tokens == 2 * 63
    assert reference.calls == 4  # collect (2 windows) + compare with itself (2 windows)
    variant = ServedModel(noise=0.5, seed=3)
    result = divergence.run_served(config, variant, "var", "ref", store, ENGINE)
    assert result.kld_mean > 0.01 and variant.calls == 2
    unasked = ServedModel(noise=0.5, seed=3)
    again = divergence.run_served(config, unasked, "var", "ref", store, ENGINE)
    assert again == result and unasked.calls == 0  # read back from the store, the server never asked


def test_variant_without_collected_reference_fails(tmp_path, config):
    with pytest.raises(NotMeasurable, match="never collected"):
        divergence.run_served(config, ServedModel(noise=0.5), "var", "ref", Store(tmp_path / "artifacts"), ENGINE)


def test_variant_with_another_tokenizer_is_not_compared(tmp_path, config):
    store = Store(tmp_path / "artifacts")
    divergence.run_served(config, ServedModel(noise=0), "ref", "ref", store, ENGINE)
    with pytest.raises(NotMeasurable, match="tokenize the divergence text differently"):
        divergence.run_served(config, ServedModel(noise=0.5, tokenizer_shift=1), "var", "ref", store, ENGINE)
    # only the reference's two results: nothing half-written for the refused variant
    assert len(list((tmp_path / "artifacts" / "divergence").glob("*/result.json"))) == 2
