"""The llm-compressor → vLLM leg end to end on a tiny model: every scheme quantizes to
compressed-tensors; every scheme that runs on this host's vLLM build and CPU (pipeline/engine_compat.json)
loads and generates under vLLM, is evaluated through lm-eval with a passing alignment probe,
load-tested and takes part in the promotion decision; a scheme measured not to run here is not run
(its verdict says why), and serving it anyway fails the way the table says.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline import compat, specs
from pipeline.settings import Settings
from tests.integration.conftest import WORDS, quantgate, user_task_refs

pytestmark = pytest.mark.integration

SCHEMES = ["fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq"]
# compressed-tensors' name for how each scheme stores its weights
EXPECTED_FORMAT = {"fp8_dynamic": "float-quantized", "w8a8_int8": "int-quantized",
                   "w4a16_gptq": "pack-quantized", "w4a16_awq": "pack-quantized"}
EVAL_LIMIT = 24
DIVERGENCE_TOKENS = 128


def name(scheme: str) -> str:
    return scheme.replace("_", "-")


@pytest.fixture(scope="module")
def host(vllm_ready) -> tuple[str, str]:
    """(installed vLLM build, this host's device class), as the plan reads them."""
    build = compat.installed_build(specs.engine("vllm").distributions, Settings().envs / "vllm")
    assert build is not None
    return build, compat.device_class(build)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts-vllm")


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory, tiny_model, user_tasks) -> Path:
    folder = tmp_path_factory.mktemp("recipe-vllm")
    recipe = {
        "name": "tiny-vllm",
        "model": {"kind": "local", "path": str(tiny_model)},
        "variants": [{"name": "bf16", "kind": "hf", "reference": True}]
        + [{"name": name(scheme), "kind": scheme} for scheme in SCHEMES],
        "engines": {"vllm": {"max_model_len": 512, "max_num_seqs": 4, "cpu_kv_cache_gib": 1}},
        "calibration": {"source": "builtin", "samples": 8, "max_seq_len": 64},
        "evals": {"tasks": ["agreement", *user_task_refs(user_tasks)], "limit": EVAL_LIMIT},
        "load": {"levels": [2], "repeats": 1, "requests_per_level": 4, "prompt_tokens": 32, "output_tokens": 8},
        "slo": {"ttft_ms": 60000},
        "divergence": {"windows": 2, "window_tokens": DIVERGENCE_TOKENS},
        "gates": {"max_accuracy_drop": 0.1, "bootstrap_iters": 1000, "max_kld": 5.0, "max_flip_rate": 1.0},
        "hardware": {"name": "ci", "usd_per_hour": 0.1},
        "tracking": {"experiment": "quantgate-vllm-test", "registered_model": "tiny-vllm"},
    }
    path = folder / "tiny-vllm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def run(recipe_path, artifacts, vllm_ready):
    proc = quantgate("run", str(recipe_path), artifacts=artifacts)
    report = json.loads(next((artifacts / "reports").glob("*.json")).read_text())
    return proc, report


@pytest.fixture(scope="module")
def runs_here(recipe_path, host) -> dict[str, bool]:
    """Variant -> whether the measured table says it runs on this host's build and CPU."""
    from pipeline.recipe.load import load_recipe

    table = {}
    for variant in load_recipe(recipe_path).variants:
        found = compat.measured(*host, variant.kind, variant.quantize_params())
        assert found is not None, f"{host} has no measured entry for {variant.kind}: add one to pipeline/engine_compat.json"
        table[variant.name] = found.runs
    return table


@pytest.fixture(scope="module")
def refused_artifacts(run, runs_here, recipe_path, artifacts) -> dict[str, Path]:
    """The schemes the run did not run here, quantized directly: the quantizer is tested on every host."""
    from pipeline import source
    from pipeline.artifacts import Store
    from pipeline.quantize import quantizer_for
    from pipeline.recipe.load import load_recipe
    from pipeline.toolenv import TRANSFORMERS, tool_env

    recipe = load_recipe(recipe_path)
    settings = Settings()
    store = Store(artifacts)
    model = source.run(recipe.model, store, tool_env(TRANSFORMERS, settings.envs), recipe.timeouts.source)
    made = {}
    for variant in recipe.variants:
        if not runs_here[variant.name]:
            artifact = quantizer_for(variant.kind, settings.envs, recipe).quantize(variant, model, store, "test")
            made[variant.name] = artifact.folder
    return made


def _row(report: dict, variant: str) -> dict:
    return next(r for r in report["rows"] if r["variant"] == variant)


def _folder(report: dict, artifacts: Path, refused: dict[str, Path], variant: str) -> Path:
    key = _row(report, variant)["artifact_key"]
    return artifacts / "variants" / key if key else refused[variant]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_quantizes_to_compressed_tensors(run, artifacts, refused_artifacts, scheme):
    _, report = run
    folder = _folder(report, artifacts, refused_artifacts, name(scheme))
    manifest = json.loads((folder / "manifest.json").read_text())
    config = json.loads((folder / "model" / "config.json").read_text())
    assert config["quantization_config"]["format"] == EXPECTED_FORMAT[scheme]
    assert manifest["format"] == "compressed-tensors" and manifest["quantization"]["kind"] == scheme
    assert manifest["quantize_seconds"] > 0 and manifest["peak_rss_mb"] > 0
    assert (manifest["calibration"] is None) == (scheme == "fp8_dynamic")
    if manifest["calibration"] is not None:  # the samples the quantizer read, not just the data set
        assert len(manifest["calibration"]["samples_sha256"]) == 64


def test_reference_is_the_unquantized_model(run, artifacts, tiny_model):
    _, report = run
    manifest = json.loads((artifacts / "variants" / _row(report, "bf16")["artifact_key"] / "manifest.json").read_text())
    assert manifest["format"] == "hf" and 15.5 < manifest["bits_per_weight"] < 16.5


@pytest.mark.parametrize("variant", ["bf16"] + [name(s) for s in SCHEMES])
def test_every_variant_that_runs_here_serves_evaluates_and_benchmarks(run, runs_here, host, variant):
    _, report = run
    row = _row(report, variant)
    if not runs_here[variant]:  # refused by the plan: nothing made or measured, the reason in its verdict
        assert row["artifact_key"] is None and row["load"] == [] and not row["passed"]
        [reason] = row["reasons"]
        assert reason.startswith("not run on this host:") and f"does not run on {host[0]} ({host[1]})" in reason
        return
    [level] = row["load"]
    assert level["errors"] == {} and level["mean_output_tokens"] == 8
    assert row["score"]["agreement"] is not None and row["score"]["qg_echo"] is not None
    assert not any("eval failed" in reason for reason in row["reasons"]), row["reasons"]


def test_vllm_reference_agrees_with_transformers(run):
    _, report = run
    parity = _row(report, "bf16")["parity"]
    assert parity["n"] == 255 and parity["mean_abs_diff"] < parity["limit"], parity


def test_smaller_schemes_store_fewer_bits(run, artifacts, refused_artifacts):
    _, report = run
    bits = {v: json.loads((_folder(report, artifacts, refused_artifacts, v) / "manifest.json").read_text())[
        "bits_per_weight"] for v in ["bf16"] + [name(s) for s in SCHEMES]}
    assert bits["w4a16-gptq"] < bits["w8a8-int8"] < bits["bf16"]
    assert bits["w4a16-awq"] < bits["fp8-dynamic"] < bits["bf16"]


def test_decision_covers_every_variant(run):
    proc, report = run
    assert {r["variant"] for r in report["rows"]} == {"bf16", *[name(s) for s in SCHEMES]}
    assert "decision:" in proc.stdout
    assert report["winner"] is not None  # with the divergence gate on, vLLM variants can still pass


def test_divergence_from_served_top_logprobs(run, runs_here):
    _, report = run
    own = _row(report, "bf16")["divergence"]
    assert own["kld_mean"] == 0 and own["flip_rate"] == 0 and own["ppl_ratio"] == 1  # served twice, same answer
    measured = [s for s in SCHEMES if runs_here[name(s)]]
    assert "fp8_dynamic" in measured and "w8a8_int8" in measured  # they run on every CPU class measured
    for scheme in measured:
        div = _row(report, name(scheme))["divergence"]
        assert div["n_tokens"] == 2 * (DIVERGENCE_TOKENS - 1) and div["top_k"] == 100
        assert 0 < div["kld_mean"] < 5 and 0 <= div["flip_rate"] <= 1, (scheme, div)
        assert 0 <= div["reference_tail_mass"] < 1 and div["ppl_ratio"] > 0


def test_measured_compatibility_table_matches_this_host(run, runs_here, host, artifacts, refused_artifacts):
    """pipeline/engine_compat.json is data measured per build and CPU class: every scheme it says runs
    here did run, with the kernel it names (read from the variant's own server log); a scheme it says
    does not run here, served anyway, fails with what the table says its log shows."""
    from pipeline.engines.vllm import VLLMEngineConfig
    from pipeline.quantize import Artifact
    from pipeline.toolenv import tool_env

    _, report = run
    logs = [p.read_text() for p in artifacts.glob("*/*/server.log")]
    for row in report["rows"]:
        if not runs_here[row["variant"]]:
            continue
        found = compat.measured(*host, row["quantization"]["kind"], row["quantization"])
        log = next(text for text in logs if f"variants/{row['artifact_key']}/model" in text)
        assert found.kernel is None or found.kernel in log, (row["variant"], found.kernel)
    if not refused_artifacts:
        return
    variant, folder = next(iter(refused_artifacts.items()))
    manifest = json.loads((folder / "manifest.json").read_text())
    found = compat.measured(*host, manifest["quantization"]["kind"], manifest["quantization"])
    assert found.fails_with, f"{host} entry for {variant} says it does not run but not how it fails"
    log_path = artifacts / "refused-server.log"
    spec = specs.engine("vllm")
    artifact = Artifact(variant, manifest["key"], folder, folder / "model", manifest, cached=True)
    with spec.make(artifact=artifact, config=VLLMEngineConfig(max_model_len=512, max_num_seqs=2),
                   env=tool_env("vllm", Settings().envs), artifacts_root=artifacts, log_path=log_path) as server:
        with pytest.raises(httpx.HTTPError):
            response = httpx.post(f"{server.base_url}/v1/completions", timeout=300,
                                  headers={"Authorization": f"Bearer {server.api_key}"},
                                  json={"model": server.served_model, "prompt": "Hello", "max_tokens": 4})
            response.raise_for_status()
    assert found.fails_with in log_path.read_text()


def test_generative_and_chat_tasks_run_through_the_served_model(run, artifacts):
    _, report = run
    row = _row(report, "bf16")
    assert report["metrics"]["qg_echo"] == "exact_match" and row["score"]["qg_length"] >= 0.9
    folder = next(p for p in (artifacts / "evals").iterdir() if (p / "result.json").is_file()
                  and json.loads((p / "result.json").read_text())["tasks"])
    result = json.loads((folder / "result.json").read_text())
    items = [json.loads(line) for line in (folder / result["tasks"]["echo-chat"]["samples_file"]).read_text().splitlines()]
    assert len(items) == len(WORDS) and all("response" in i for i in items)
    chat = next((folder / "lm-eval" / "echo-chat").rglob("samples_qg_echo_*.jsonl")).read_text()
    assert "<|im_start|>" in chat  # rendered with the served model's own chat template


def test_lm_eval_run_by_hand_scores_the_same_items(run, artifacts, tmp_path):
    """The pipeline's per-item results are lm-eval's: the CLI, run by hand from the repository root
    against the same served reference (the README's command), gives the same loglikelihoods."""
    import subprocess

    from pipeline.engines.vllm import VLLMEngineConfig
    from pipeline.quantize import Artifact
    from pipeline.settings import REPO_ROOT
    from pipeline.toolenv import tool_env

    _, report = run
    row = _row(report, "bf16")
    folder = artifacts / "variants" / row["artifact_key"]
    manifest = json.loads((folder / "manifest.json").read_text())
    ours = next(p for p in (artifacts / "evals").iterdir() if (p / "result.json").is_file()
                and (p / "server.log").is_file() and f"variants/{row['artifact_key']}/model" in (p / "server.log").read_text())
    result = json.loads((ours / "result.json").read_text())
    pipeline_items = [json.loads(line) for line in (ours / result["tasks"]["agreement"]["samples_file"]).read_text().splitlines()]
    env = tool_env("vllm", Settings().envs)
    artifact = Artifact("bf16", manifest["key"], folder, folder / "model", manifest, cached=True)
    with specs.engine("vllm").make(artifact=artifact, config=VLLMEngineConfig(max_model_len=512, max_num_seqs=4),
                                   env=env, artifacts_root=artifacts, log_path=tmp_path / "server.log") as server:
        command = [str(env.root / "bin" / "lm-eval"), "run", "--model", "local-completions", "--model_args",
                   f"model={server.served_model},base_url={server.base_url}/v1/completions,tokenizer_backend=huggingface,"
                   f"tokenizer={artifact.model_path},tokenized_requests=False,num_concurrent=1,max_length=512",
                   "--tasks", "qg_agreement", "--include_path", "evalsets/agreement", "--limit", str(EVAL_LIMIT),
                   "--log_samples", "--output_path", str(tmp_path / "by-hand")]
        subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True,
                       env=env.environ({"OPENAI_API_KEY": server.api_key}))
    by_hand = [json.loads(line) for line in next((tmp_path / "by-hand").rglob("samples_qg_agreement_*.jsonl"))
               .read_text().splitlines()]
    by_hand.sort(key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in by_hand] == [i["doc_id"] for i in pipeline_items]
    for theirs, mine in zip(by_hand, pipeline_items):
        lls = [float(r[0]) for r in theirs["filtered_resps"]]
        assert lls == pytest.approx(mine["loglikelihoods"], abs=0.02), theirs["doc_id"]  # batching: bf16 noise
        if abs(lls[0] - lls[1]) > 0.05:  # not a near-tie: the same answer
            assert float(theirs["acc"]) == mine["value"], theirs["doc_id"]
