"""What changed since the last run of a recipe, from its facts and verdicts: each change one line,
nothing when nothing changed, and the facts read from the run's own results."""

from __future__ import annotations

from pathlib import Path

from pipeline import changes
from pipeline.report import Report

REPORT = Report.load(Path(__file__).parent / "data" / "demo_report.json")  # f16 and q8_0 pass; q4_k_m, q2_k fail
NOW = {"facts.model_sha256": "b179c9523d0e6a0f98a3", "facts.tool.llama-cpp-python": "0.3.16",
       "facts.tool.guidellm": "0.8.1", "facts.tool.lm-eval": "0.4.9"}
VERDICTS = {"f16": "pass", "q8_0": "pass", "q4_k_m": "fail", "q2_k": "fail"}


def test_nothing_changed_says_nothing():
    assert changes.since({**NOW, "winner": "f16", "git_commit": "abc"}, VERDICTS, NOW, REPORT) == []


def test_each_change_is_one_line():
    before = {**NOW, "facts.model_sha256": "0123456789abcdef0123", "facts.tool.guidellm": "0.7.3",
              "facts.tool.vllm": "0.31.0"}
    said = changes.since(before, {"f16": "pass", "q8_0": "fail", "q4_k_m": "fail", "q6_k": "pass"}, NOW, REPORT)
    assert said == ["model_sha256: 0123456789ab → b179c9523d0e", "guidellm: 0.7.3 → 0.8.1", "vllm: 0.31.0 → none",
                    "variants added: q2_k", "variants dropped: q6_k", "verdict flipped: q8_0 fail → pass"]


class _Manifest:
    def __init__(self, manifest):
        self.manifest = manifest


class _Result:
    def __init__(self, manifest=None, lm_eval=None, generator=None):
        from types import SimpleNamespace

        self.artifact = _Manifest(manifest) if manifest else None
        self.evals = SimpleNamespace(lm_eval_version=lm_eval) if lm_eval else None
        self.load = SimpleNamespace(generator=generator) if generator else None


def test_facts_are_read_from_the_runs_own_results():
    results = [_Result({"source": {"sha256": "abc"}, "tool_versions": {"llm-compressor": "0.14.0"}}, "0.4.9",
                       "guidellm==0.8.1"), _Result()]
    assert changes.facts("v2", results) == {"facts.model_revision": "v2", "facts.model_sha256": "abc",
                                            "facts.tool.llm-compressor": "0.14.0", "facts.tool.lm-eval": "0.4.9",
                                            "facts.tool.guidellm": "0.8.1"}
