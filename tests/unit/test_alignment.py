"""Alignment probe: the in-process scorer must read the same positions as the server's greedy tokens."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.workers.alignment import check_alignment

N = 12


def aligned(n: int = N, noise: float = 0.02, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Server tokens and scorer rows that agree, up to kernel noise of at most `noise` nats."""
    rng = random.Random(seed)
    server, scorer = [], []
    for i in range(n):
        lp = -rng.uniform(0.01, 1.5)
        token_lp = lp + rng.uniform(-noise, noise)
        server.append({"id": 1000 + i, "logprob": lp})
        scorer.append({"top1_id": 1000 + i, "top1_logprob": token_lp, "top2_logprob": token_lp - 2.0,
                       "token_logprob": token_lp})
    return server, scorer


def test_aligned_rows_pass():
    server, scorer = aligned()
    result = check_alignment(server, scorer)
    assert result["passed"], result["reason"]
    assert result["n"] == N and result["confident_mismatches"] == 0 and result["near_tie_flips"] == 0
    assert result["max_abs_diff"] <= 0.02 and result["reason"] == ""


def test_near_tie_flips_pass_and_are_counted():
    server, scorer = aligned()
    for i in (3, 8):  # the scorer's top-1 is another token, ahead of the server's by only 0.3 nats
        scorer[i] = {"top1_id": 7, "top1_logprob": -0.55, "top2_logprob": -0.85, "token_logprob": -0.85}
        server[i] = {"id": server[i]["id"], "logprob": -0.55}
    result = check_alignment(server, scorer)
    assert result["passed"], result["reason"]
    assert result["near_tie_flips"] == 2 and result["confident_mismatches"] == 0
    assert result["max_abs_diff"] == pytest.approx(0.3, abs=1e-6)


def test_scorer_one_position_off_fails():
    server, _ = aligned()
    scorer = []
    for i, s in enumerate(server):
        # The row belongs to the neighbouring position: it confidently predicts another token,
        # and gives the server's token a logprob nats away from what the server saw.
        scorer.append({"top1_id": 5000 + i, "top1_logprob": -0.1, "top2_logprob": -2.5,
                       "token_logprob": -3.1 - (i % 3)})
    result = check_alignment(server, scorer)
    assert not result["passed"]
    assert result["confident_mismatches"] == N
    assert result["reason"] and f"{N} of {N}" in result["reason"]


def test_one_confident_mismatch_is_enough_to_fail():
    server, scorer = aligned()
    scorer[5] = {**scorer[5], "top1_id": 9, "top1_logprob": scorer[5]["token_logprob"] + 0.6}
    result = check_alignment(server, scorer)
    assert not result["passed"] and result["confident_mismatches"] == 1


def test_systematic_logprob_offset_fails_even_when_ids_agree():
    server, scorer = aligned()
    for row in scorer:  # same argmax everywhere, but every logprob off by 0.4 nats (e.g. wrong temperature)
        row["token_logprob"] -= 0.4
        row["top1_logprob"] -= 0.4
    result = check_alignment(server, scorer)
    assert not result["passed"]
    assert result["median_abs_diff"] == pytest.approx(0.4, abs=0.03)


@pytest.mark.parametrize("n_server, n_scorer", [(0, 0), (12, 11), (11, 12), (0, 3)])
def test_length_mismatch_or_empty_fails(n_server, n_scorer):
    server, scorer = aligned()
    result = check_alignment(server[:n_server], scorer[:n_scorer])
    assert not result["passed"]
    assert str(n_server) in result["reason"] and str(n_scorer) in result["reason"]


@pytest.mark.parametrize("where", ["server", "scorer"])
def test_nan_fails(where):
    server, scorer = aligned()
    if where == "server":
        server[4]["logprob"] = math.nan
    else:
        scorer[4]["token_logprob"] = math.nan
    result = check_alignment(server, scorer)
    assert not result["passed"] and result["reason"]
