"""How a run's outcome is told: one line per failure, and whether tool faults broke the run."""

from __future__ import annotations

from pipeline.run import broken
from pipeline.variant import VariantResult


def result(name: str, reference: bool = False, **errors) -> VariantResult:
    return VariantResult(name=name, engine="llamacpp", reference=reference, **errors)


def test_one_failure_that_stopped_several_steps_is_said_once():
    down = "server failed: server exited with signal SIGKILL; log artifacts/failed/serve-q8_0.log"
    r = result("q8_0", eval_error=down, load_error=down, divergence_error="HTTPError: 500")
    assert r.failures() == ["divergence FAILED: HTTPError: 500", f"evals, load FAILED: {down}"]


def test_a_failed_reference_breaks_the_run():
    results = [result("f16", reference=True, quantize_error="gguf-base 1234 failed: OSError: disk full"),
               result("q8_0"), result("q4_k_m")]
    assert broken(results) == ["reference f16: gguf-base 1234 failed: OSError: disk full"]


def test_every_variant_failing_breaks_the_run_but_one_does_not():
    assert broken([result("f16", reference=True), result("q8_0", eval_error="x"), result("q4", load_error="y")]) \
        == ["every variant failed (q8_0, q4)"]
    assert broken([result("f16", reference=True), result("q8_0", eval_error="x"), result("q4")]) == []


def test_variants_not_run_on_this_host_do_not_count_as_failures():
    results = [result("bf16", reference=True), result("w4a16", not_run="needs AVX-512"), result("fp8")]
    assert broken(results) == []
    results[2].load_error = "guidellm failed (exit 1)"
    assert broken(results) == ["every variant failed (fp8)"]


def test_divergence_that_cannot_be_measured_does_not_break_a_run():
    results = [result("f16", reference=True, divergence_error="engine x: not measurable"), result("q8_0")]
    assert broken(results) == []
