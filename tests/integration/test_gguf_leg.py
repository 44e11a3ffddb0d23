"""The real GGUF leg end to end on a tiny model: convert, quantize, serve, eval, load sweep, record, promote.

One pipeline run per module (then one cached re-run); the tests read what it left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.artifacts import sha256_file
from pipeline.settings import REPO_ROOT
from tests.integration.conftest import WORDS, quantgate, user_task_refs

pytestmark = pytest.mark.integration

VARIANTS = [("f16", "F16"), ("q8_0", "Q8_0"), ("q4_k_m", "Q4_K_M")]
GROUP_LABELS = ["qg_lengths/qg_length", "qg_lengths/qg_length_again"]
EVAL_LIMIT = 40


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_model, user_tasks) -> Path:
    folder = tmp_path_factory.mktemp("recipe")
    data = {
        "name": "tiny-test",
        "model": {"kind": "local", "path": str(tiny_model)},
        "variants": [{"name": n, "kind": "gguf", "type": t, "reference": n == "f16"} for n, t in VARIANTS],
        "engines": {"llamacpp": {"threads": 1, "parallel": 2, "ctx_per_slot": 256}},
        "evals": {"tasks": ["agreement", *user_task_refs(user_tasks), {"path": str(user_tasks), "task": "qg_lengths"},
                            {"path": str(user_tasks), "task": "qg_lengths", "name": "lengths-pooled",
                             "gate": "aggregate"}], "limit": EVAL_LIMIT},
        "load": {"levels": [1, 2], "repeats": 2, "requests_per_level": 3, "prompt_tokens": 32, "output_tokens": 12,
                 "warmup_requests": 1},
        "divergence": {"text": "stdlib:difflib", "windows": 2, "window_tokens": 256},
        "slo": {"ttft_ms": 20000},
        "gates": {"max_accuracy_drop": 0.05, "max_kld": 10.0, "max_flip_rate": 1.0, "bootstrap_iters": 2000},
        "hardware": {"name": "ci", "usd_per_hour": 0.1, "memory_gib": 4, "target_qps": 2},
        "tracking": {"experiment": "quantgate-test", "registered_model": "tiny-test"},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def first_run(recipe, artifacts) -> subprocess.CompletedProcess:
    return quantgate("run", str(recipe), artifacts=artifacts)


@pytest.fixture(scope="module")
def report(first_run, artifacts) -> dict:
    reports = sorted((artifacts / "reports").glob("*.json"))
    assert len(reports) == 1
    return json.loads(reports[0].read_text())


def _row(report: dict, name: str) -> dict:
    return next(r for r in report["rows"] if r["variant"] == name)


def _manifest(artifacts: Path, report: dict, name: str) -> dict:
    return json.loads((artifacts / "variants" / _row(report, name)["artifact_key"] / "manifest.json").read_text())


def test_run_prints_summary_and_decision(first_run, report):
    out = first_run.stdout
    for name, _ in VARIANTS:
        assert name in out
    assert "decision:" in out
    assert report["winner"] in {name for name, _ in VARIANTS}
    winner = _row(report, report["winner"])
    assert winner["passed"] and winner["promoted"]
    passing = [r for r in report["rows"] if r["passed"]]
    cheapest = min(passing, key=lambda r: r["usd_per_1m_tokens"])
    # the cheapest, or one its cost interval overlaps (a tie the decision names)
    assert winner["variant"] == cheapest["variant"] or cheapest["variant"] in report["tied"], report["decision"]


def test_manifests_describe_what_the_files_hold(artifacts, report):
    import hashlib

    bits = {}
    for name, gguf_type in VARIANTS:
        manifest = _manifest(artifacts, report, name)
        model = artifacts / "variants" / manifest["key"] / "model.gguf"
        assert manifest["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        assert manifest["file_bytes"] == model.stat().st_size
        assert manifest["quantization"] == {"kind": "gguf", "type": gguf_type}
        assert manifest["tool_versions"]["llama-cpp-python"]
        assert sum(manifest["tensor_type_counts"].values()) == len(manifest["tensors"]) > 0
        bits[name] = manifest["bits_per_weight"]
    assert 15.9 < bits["f16"] < 16.3
    assert 8.4 < bits["q8_0"] < 9.0
    assert bits["q4_k_m"] < bits["q8_0"] < bits["f16"]
    # Widths here are multiples of 256, so Q4_K_M really holds k-quant tensors (on the demo model
    # most fall back to legacy types; the manifest must tell, not the type's name).
    assert "Q4_K" in _manifest(artifacts, report, "q4_k_m")["tensor_type_counts"]


def test_evals_are_per_sample_and_probe_checked(artifacts, report):
    for name, _ in VARIANTS:
        row = _row(report, name)
        assert 0.0 <= row["score"]["agreement"] <= 1.0
    folders = [p for p in (artifacts / "evals").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == len(VARIANTS)
    for folder in folders:
        result = json.loads((folder / "result.json").read_text())
        assert result["alignment"]["passed"] is True
        items = [json.loads(line) for line in (folder / result["tasks"]["agreement"]["samples_file"]).read_text().splitlines()]
        assert len(items) == EVAL_LIMIT and result["tasks"]["agreement"]["metric"] == "acc"
        assert abs(sum(i["value"] for i in items) / EVAL_LIMIT - result["tasks"]["agreement"]["value"]) < 1e-9
        assert all(i["n_choices"] == 2 and i["choice"] in (0, 1) and i["gold"] in (0, 1) for i in items)
        assert (folder / "server.log").is_file()
    ref = _row(report, "f16")
    assert ref["delta"]["agreement"] == 0.0


def test_a_users_task_folder_outside_the_repository_is_gated_like_a_bundled_set(report):
    """qg_length's right answer is always the shortest, which summed log-probabilities prefer even
    on a random model: informative, so it decides; agreement on a random model cannot tell."""
    assert report["tasks"] == ["agreement", "qg_length", "qg_echo", "echo-chat", *GROUP_LABELS, "lengths-pooled"]
    assert report["metrics"]["qg_length"] == "acc" and report["metrics"]["qg_echo"] == "exact_match"
    ref = _row(report, "f16")
    assert ref["score"]["qg_length"] >= 0.9 and "qg_length" not in ref["uninformative"]
    for name, _ in VARIANTS[1:]:
        assert "qg_length" in _row(report, name)["delta_upper"]  # compared item by item
        assert "qg_echo" not in _row(report, name)["delta_upper"]  # uninformative: reported, not gated
    assert "qg_echo" in ref["uninformative"] and "uninformative" in ref["uninformative"]["qg_echo"]


def test_a_group_runs_on_the_server_gated_per_member_and_pooled(artifacts, report):
    """qg_lengths (two members) named twice in the recipe: gated member by member, and pooled."""
    for folder in (p for p in (artifacts / "evals").iterdir() if (p / "result.json").is_file()):
        result = json.loads((folder / "result.json").read_text())
        members = [[json.loads(line) for line in (folder / result["tasks"][label]["samples_file"]).read_text()
                    .splitlines()] for label in GROUP_LABELS]
        pooled = [json.loads(line) for line in (folder / result["tasks"]["lengths-pooled"]["samples_file"])
                  .read_text().splitlines()]
        assert [len(items) for items in members] == [2 * len(WORDS)] * 2 and len(pooled) == 4 * len(WORDS)
        assert [i["value"] for i in pooled] == [i["value"] for items in members for i in items]
        assert {i["subtask"] for i in pooled} == {"qg_length", "qg_length_again"}
        lm_eval = json.loads(next((folder / "lm-eval" / "lengths-pooled").rglob("results_*.json")).read_text())
        assert {"qg_length", "qg_length_again"} <= set(lm_eval["results"])
        assert set(lm_eval["group_subtasks"]["qg_lengths"]) == {"qg_length", "qg_length_again"}
    for name, _ in VARIANTS[1:]:
        assert set(GROUP_LABELS + ["lengths-pooled"]) <= set(_row(report, name)["delta_upper"])


def test_generative_tasks_run_through_the_server_with_and_without_the_chat_template(artifacts, report):
    folder = artifacts / "evals" / next(p.name for p in (artifacts / "evals").iterdir()
                                         if (p / "result.json").is_file())
    result = json.loads((folder / "result.json").read_text())
    for label in ("qg_echo", "echo-chat"):
        items = [json.loads(line) for line in (folder / result["tasks"][label]["samples_file"]).read_text().splitlines()]
        assert len(items) == len(WORDS) and all(i["value"] in (0.0, 1.0) and "response" in i for i in items)
        assert sorted(i["target"].strip() for i in items) == sorted(WORDS)
    # lm-eval's own files, as its CLI writes them: the chat prompts went through the GGUF's template
    plain = next((folder / "lm-eval" / "qg_echo").rglob("samples_qg_echo_*.jsonl")).read_text()
    chat = next((folder / "lm-eval" / "echo-chat").rglob("samples_qg_echo_*.jsonl")).read_text()
    assert "<|im_start|>" in chat and "<|im_start|>" not in plain
    assert list((folder / "lm-eval" / "qg_echo").rglob("results_*.json"))


def test_divergence_is_zero_for_the_reference_and_grows_with_compression(report):
    divergence = {name: _row(report, name)["divergence"] for name, _ in VARIANTS}
    # The reference against itself: the measurement adds no noise of its own.
    assert divergence["f16"]["kld_mean"] == 0.0 and divergence["f16"]["flip_rate"] == 0.0
    assert divergence["f16"]["ppl_ratio"] == 1.0
    assert divergence["f16"]["n_tokens"] == 2 * 255
    assert 0 < divergence["q8_0"]["kld_mean"] < divergence["q4_k_m"]["kld_mean"]
    assert 0 <= divergence["q8_0"]["flip_rate"] <= divergence["q4_k_m"]["flip_rate"] <= 1


def test_reference_agrees_with_transformers(report):
    parity = _row(report, "f16")["parity"]
    assert parity["n"] == 255 and parity["mean_abs_diff"] < 0.1, parity
    assert all(_row(report, name)["parity"] is None for name, _ in VARIANTS[1:])  # references only


def test_load_sweep_measured_each_level_and_priced_the_slo_load(report, first_run):
    for name, _ in VARIANTS:
        row = _row(report, name)
        assert [level["level"] for level in row["load"]] == [1.0, 2.0]
        for level in row["load"]:
            assert level["errors"] == {} and level["rounds"] == 2 and level["measured"] == 6  # 2 passes of 3
            assert level["mean_prompt_tokens"] == 32 and level["mean_output_tokens"] == 12  # the recipe's workload
            ttft = level["latency_ms"]["ttft_ms"]
            assert 0 < ttft["p50"]["estimate"] <= ttft["p95"]["estimate"] <= ttft["p99"]["estimate"]
            assert level["output_tokens_per_s"]["low"] <= level["output_tokens_per_s"]["estimate"]
        capacity = row["capacity"]
        assert capacity["slo_level"]["level"] == 2.0  # a 20 s TTFT holds at both levels
        cost = capacity["usd_per_1m_tokens"]
        # two passes: t(0.975, 1) = 12.7, so the throughput's lower bound may reach 0 and the cost be unbounded
        assert cost["low"] <= cost["estimate"] and (cost["high"] is None or cost["estimate"] <= cost["high"])
        assert row["usd_per_1m_tokens"] == cost["estimate"]
        assert capacity["replicas"]["estimate"] >= 1 and capacity["accelerators_per_replica"] == 1
    assert "load sweep (concurrency)" in first_run.stdout


def test_mlflow_holds_parent_children_and_champion(artifacts, report):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{artifacts / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quantgate-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == len(VARIANTS)
    child = next(r for r in children if r.info.run_name == "q8_0")
    assert child.data.params["type"] == "Q8_0"
    # the same keys on every variant, grouped for MLflow's charts; the thresholds beside them
    row = next(r for r in report["rows"] if r["variant"] == "q8_0")
    groups = {"gate", "quality", "fidelity", "size", "quantize", "load", "cost", "per_level"}
    assert all(key.split("/")[0] in groups for c in children for key in c.data.metrics)
    quality = [{k for k in c.data.metrics if k.startswith("quality/")} for c in children if c.info.run_name != "f16"]
    assert all(keys == quality[0] for keys in quality)
    assert child.data.metrics["quality/agreement/score"] == row["score"]["agreement"]
    assert row["delta_upper"] and all(child.data.metrics[f"quality/{task}/drop_bound"] == bound
                                      for task, bound in row["delta_upper"].items())
    assert "quality/qg_echo/score" in child.data.metrics and "fidelity/kld_mean" in child.data.metrics
    assert child.data.metrics["cost/usd_per_1m_tokens"] == row["capacity"]["usd_per_1m_tokens"]["estimate"]
    assert "load/output_tokens_per_s_low" in child.data.metrics and "load/ttft_p95_ms" in child.data.metrics
    assert child.data.params["gate.agreement.max_drop"] == f"{report['thresholds']['gate.agreement.max_drop']:g}"
    assert child.data.params["quality.agreement.metric"] == "acc" and "slo.ttft_ms" in child.data.params
    ttft = client.get_metric_history(child.info.run_id, "per_level/ttft_p95_ms")
    assert [m.step for m in ttft] == [0, 1]  # one point per load level
    assert child.data.tags["verdict"] in {"pass", "fail"} and child.data.tags["verdict"] == ("pass" if row["passed"] else "fail")
    assert (child.data.tags["method"], child.data.tags["scheme"], child.data.tags["weight_bits"]) == ("llama.cpp", "Q8_0", "8")
    # the eval data as MLflow datasets, and the items q8_0 answered unlike f16 as a table
    assert {d.dataset.name for d in client.get_run(child.info.run_id).inputs.dataset_inputs} >= {"agreement", "qg_echo"}
    flipped = json.loads(Path(client.download_artifacts(child.info.run_id, "flipped_items.json")).read_text())
    reference = next(r for r in children if r.info.run_name == "f16")

    def values(run) -> list[float]:
        path = client.download_artifacts(run.info.run_id, "evals/samples_agreement.jsonl")
        return [json.loads(line)["value"] for line in Path(path).read_text().splitlines()]

    differ = [(a, b) for a, b in zip(values(reference), values(child)) if a != b]
    rows = [dict(zip(flipped["columns"], r)) for r in flipped["data"] if r[flipped["columns"].index("task")] == "agreement"]
    assert differ and len(rows) == len(differ)  # the random tiny model answers a few items differently
    assert [r["direction"] for r in rows].count("right→wrong") == sum(a > b for a, b in differ)
    assert all(r["prompt"] and r["reference_answer"] != r["variant_answer"] for r in rows)
    artifact_paths = {f.path for f in client.list_artifacts(child.info.run_id)}
    assert {"artifact", "evals", "load"} <= artifact_paths
    load_files = {f.path for f in client.list_artifacts(child.info.run_id, "load")}
    assert {"load/result.json", "load/guidellm.json", "load/load-q8_0.png"} <= load_files
    assert "load-all-variants.png" in {f.path for f in client.list_artifacts(parents[0].info.run_id)}
    assert "model_card.md" in artifact_paths
    card = Path(client.download_artifacts(child.info.run_id, "model_card.md")).read_text()
    assert card.startswith("# q8_0 (") and "## Quality" in card and "## Performance and cost" in card
    version = client.get_model_version_by_alias("tiny-test", "champion")
    assert version.tags["variant"] == report["winner"]
    assert version.tags["sha256"] == _manifest(artifacts, report, report["winner"])["sha256"]
    assert version.description.startswith(f"# {report['winner']} (") and version.tags["promoted_at"]
    assert "cost.usd_per_1m_tokens" in version.tags and any(k.startswith("quality.") for k in version.tags)
    assert parents[0].data.tags["winner"] == report["winner"]
    # the report for people, on the parent run and under artifacts/reports/<run>/, naming its run
    logged = {f.path for f in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/quality-vs-cost.png"} <= logged
    folder = sorted((artifacts / "reports").glob("*.json"))[0].with_suffix("")  # the first run's
    text = (folder / "report.md").read_text()
    assert f"MLflow parent run `{parents[0].info.run_id}`" in text and f"**Decision:** {report['decision']}" in text
    assert sorted(p.name for p in (folder / "cards").iterdir()) == sorted(f"{name}.md" for name, _ in VARIANTS)


def test_second_run_redoes_nothing(first_run, recipe, artifacts, report):
    def entries() -> set[str]:
        return {str(p.relative_to(artifacts)) for stage in ("variants", "evals", "load", "gguf-base")
                for p in (artifacts / stage).iterdir() if not p.name.startswith(".")}

    def reports() -> list[str]:
        return sorted(p.stem for p in (artifacts / "reports").glob("*.json"))

    before, first_name = entries(), reports()[0]
    plan = quantgate("plan", str(recipe), artifacts=artifacts)
    assert "0 of 3 variants have work left" in plan.stdout
    again = quantgate("run", str(recipe), artifacts=artifacts)
    # the same recipe, entries and code as the recorded first run: its decision stands, nothing is redone
    assert entries() == before and reports() == [first_name]
    assert f"nothing changed since run {first_name}" in again.stdout
    assert re.search(r"^\s*[\d.]+s MLflow parent run", again.stdout, re.M) is None  # no new record
    assert f"decision: {report['decision']}" in " ".join(again.stdout.split())

    # recorded again on request: every entry reused (hashed), compared with the first run
    recorded = quantgate("run", str(recipe), "--force", "record", artifacts=artifacts)
    assert entries() == before
    assert all(f"[{name}] quantize cached" in recorded.stdout for name, _ in VARIANTS)
    assert "starting llamacpp server" not in recorded.stdout  # no measurement was redone
    assert "already holds this artifact" in recorded.stdout  # champion unchanged, no new version
    assert "since the last run: this is the first complete run" in first_run.stdout
    assert f"since the last run ({first_name}): nothing changed" in recorded.stdout

    # a file written since its entry was made is doubted: the run takes the path that hashes it
    touched = next((artifacts / "evals").glob("*/result.json"))
    os.utime(touched)
    doubted = quantgate("run", str(recipe), artifacts=artifacts)
    assert "nothing changed since run" not in doubted.stdout and "quantize cached" in doubted.stdout
    assert entries() == before  # its bytes are those it was made with: reused, not made again
    # and, hashed and found intact, it is trusted again
    assert "nothing changed since run" in quantgate("run", str(recipe), artifacts=artifacts).stdout


def test_alignment_probe_catches_a_shifted_scorer(llamacpp, artifacts, report):
    """The real scorer passes against the live server; one reading logits a position late fails."""
    from pipeline.engines.llamacpp import LlamaCppEngineConfig, LlamaServerEngine
    from pipeline.quantize import Artifact

    manifest = _manifest(artifacts, report, "q8_0")
    folder = artifacts / "variants" / manifest["key"]
    artifact = Artifact("q8_0", manifest["key"], folder, folder / "model.gguf", manifest, cached=True)
    with LlamaServerEngine(artifact, LlamaCppEngineConfig(parallel=1, ctx_per_slot=256), llamacpp,
                           artifacts / "probe-server.log") as engine:
        proc = subprocess.run(
            [str(llamacpp.python), "-m", "tests.integration.probe_check", str(artifact.model_path),
             engine.base_url, engine.api_key],
            env=llamacpp.environ(), cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["real"]["passed"], result["real"]
    assert not result["shifted"]["passed"], result["shifted"]


def test_lm_eval_run_by_hand_on_a_chat_task_gives_the_same_answers(llamacpp, artifacts, report, user_tasks,
                                                                   tmp_path):
    """echo-chat as a user would run it by hand (the README's command): lm-eval's own chat client
    against the same served variant, the server rendering the chat with the GGUF's template. The
    pipeline rendered it with the same template itself and sent text; every answer must be the same."""
    from pipeline.engines.llamacpp import LlamaCppEngineConfig, LlamaServerEngine
    from pipeline.quantize import Artifact

    manifest = _manifest(artifacts, report, "f16")
    folder = artifacts / "variants" / manifest["key"]
    ours = next(p for p in (artifacts / "evals").iterdir() if (p / "server.log").is_file()
                and f"variants/{manifest['key']}/model.gguf" in (p / "server.log").read_text())
    result = json.loads((ours / "result.json").read_text())
    pipeline_items = [json.loads(line) for line in (ours / result["tasks"]["echo-chat"]["samples_file"])
                      .read_text().splitlines()]
    artifact = Artifact("f16", manifest["key"], folder, folder / "model.gguf", manifest, cached=True)
    with LlamaServerEngine(artifact, LlamaCppEngineConfig(threads=1, parallel=2, ctx_per_slot=256), llamacpp,
                           tmp_path / "server.log") as engine:
        command = [str(llamacpp.root / "bin" / "lm-eval"), "run", "--model", "local-chat-completions",
                   "--model_args", f"model={engine.served_model},base_url={engine.base_url}/v1/chat/completions,"
                   "num_concurrent=1", "--tasks", "qg_echo", "--include_path", str(user_tasks),
                   "--apply_chat_template", "--log_samples", "--output_path", str(tmp_path / "by-hand")]
        # from the tasks' folder, as the pipeline runs them: their data_files are relative to it
        subprocess.run(command, cwd=user_tasks, check=True, capture_output=True,
                       env=llamacpp.environ({"OPENAI_API_KEY": engine.api_key}))
    by_hand = sorted((json.loads(line) for line in next((tmp_path / "by-hand").rglob("samples_qg_echo_*.jsonl"))
                      .read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in by_hand] == [i["doc_id"] for i in pipeline_items] and len(by_hand) == len(WORDS)
    assert [s["filtered_resps"][0] for s in by_hand] == [i["response"] for i in pipeline_items]
    assert [float(s["exact_match"]) for s in by_hand] == [i["value"] for i in pipeline_items]


def test_converted_tokenizer_matches_the_original_gguf(llamacpp, artifacts, report, demo_gguf):
    """The materialised tokenizer round-trips: same ids as the GGUF it came from (it once did not)."""
    converted = artifacts / "variants" / _row(report, "f16")["artifact_key"] / "model.gguf"
    script = (
        "import llama_cpp, sys, json\n"
        "texts = ['Hello world, the capital of France is 12345 Paris!', ' tabs\\tand\\nnewlines ünïcödé 😀']\n"
        "out = []\n"
        "for path in sys.argv[1:3]:\n"
        "    llm = llama_cpp.Llama(path, vocab_only=True, verbose=False)\n"
        "    out.append([llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts])\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(llamacpp.python), "-c", script, str(converted), str(demo_gguf)],
                          env=llamacpp.environ(), capture_output=True, text=True, check=True)
    ours, original = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ours == original


def _serve(artifacts: Path, *args: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """`quantgate serve …` started; what it printed before "Ctrl-C stops it." as {"base URL": …}."""
    env = dict(os.environ, QUANTGATE_ARTIFACTS=str(artifacts), HF_HUB_OFFLINE="1", COLUMNS="200")
    proc = subprocess.Popen([str(REPO_ROOT / ".venv" / "bin" / "quantgate"), "serve", *args], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said: dict[str, str] = {}
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C stops it."):
            return proc, said
        name, _, value = line.partition(":")
        said[name.strip()] = value.strip()
    raise AssertionError(f"serve exited {proc.wait()} before serving:\n{''.join(lines)}")


def _stopped(proc: subprocess.Popen) -> str:
    """Ctrl-C stops `serve` (exit 0); if it does not, SIGTERM does (its server too), and the test fails."""
    proc.send_signal(signal.SIGINT)
    try:
        rest = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=60)
        raise AssertionError("quantgate serve did not stop on SIGINT within 60 s") from None
    assert proc.returncode == 0, rest
    return rest


@pytest.mark.parametrize("store", ["this host's", "the registry's"])
def test_serve_answers_an_openai_clients_chat_with_the_champion(artifacts, report, tmp_path, store):
    """The champion as measured (its engine settings from the recipe) for an OpenAI client, with the
    artifact from the host's store, or downloaded from the registry where the host has none."""
    from openai import AuthenticationError, OpenAI

    home = artifacts if store == "this host's" else tmp_path / "elsewhere"
    proc, said = _serve(home, "tiny-test@champion", "--tracking-uri", f"sqlite:///{artifacts / 'mlflow.db'}")
    try:
        winner = report["winner"]
        served = said["tiny-test@champion"]
        assert f"({winner}, sha256 " in served and ("from the registry" in served) == (store != "this host's")
        assert "on llamacpp as measured: threads=1 parallel=2 " in served and "ctx_per_slot=256" in served
        assert said["base URL"].startswith("http://127.0.0.1:") and said["API key"].startswith("qg-")
        client = OpenAI(base_url=said["base URL"], api_key=said["API key"])
        answer = client.chat.completions.create(model=said["model"], max_tokens=8, temperature=0,
                                                messages=[{"role": "user", "content": "Say hello."}])
        assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=said["base URL"], api_key="wrong").models.list()
    finally:
        rest = _stopped(proc)
    assert "stopped" in rest
    if store != "this host's":
        (downloaded,) = (home / "serve").glob("tiny-test-v*/**/model.gguf")
        assert sha256_file(downloaded) == _manifest(artifacts, report, report["winner"])["sha256"]


def test_serve_refuses_what_the_registry_does_not_have(artifacts, report):
    proc = quantgate("serve", "tiny-test@nosuch", "--tracking-uri", f"sqlite:///{artifacts / 'mlflow.db'}",
                     artifacts=artifacts, check=False)
    assert proc.returncode == 2 and "tiny-test has no 'nosuch' version" in proc.stderr and "Traceback" not in proc.stderr
    proc = quantgate("serve", "nosuch-model", "--tracking-uri", f"sqlite:///{artifacts / 'mlflow.db'}",
                     artifacts=artifacts, check=False)
    assert proc.returncode == 2 and "no registered model 'nosuch-model'" in proc.stderr and "registered: tiny-test" in proc.stderr


def test_a_team_server_on_postgresql_takes_the_whole_record(first_run, recipe, artifacts, report, tmp_path):
    """`mlflow server` over a real PostgreSQL (own cluster on loopback) with an artifacts destination:
    a run records into it (measurements reused from the host's store), the rows are in PostgreSQL,
    the report and model files are behind the server, and status and serve read from it."""
    from tests.integration.team_server import mlflow_server, postgres, psql

    with postgres() as database, mlflow_server(database, tmp_path / "team-artifacts", tmp_path / "mlflow.log") as url:
        run = quantgate("run", str(recipe), artifacts=artifacts, QUANTGATE_TRACKING_URI=url)
        assert f"tracking store {url}" not in run.stderr and "registry: registered version 1" in run.stdout
        names = psql(database, "select name from runs where lifecycle_stage = 'active' order by name").split()
        assert sum(name.startswith("tiny-") for name in names) == 1 and sorted(n for n in names if not n.startswith("tiny-")) \
            == sorted(name for name, _ in VARIANTS)
        assert psql(database, "select count(*) from model_versions where name = 'tiny-test'").strip() == "1"
        assert int(psql(database, "select count(*) from metrics where key like 'quality/%'")) > 0
        # artifacts went to the destination through the server, not to this host's MLflow folder
        assert list((tmp_path / "team-artifacts").rglob("report.html")) and list((tmp_path / "team-artifacts").rglob("model.gguf"))
        status = quantgate("status", "tiny-test", "--tracking-uri", url, artifacts=artifacts)
        assert f"champion is version 1 ({report['winner']}" in status.stdout
        proc, said = _serve(tmp_path / "elsewhere", "tiny-test", "--tracking-uri", url)
        try:
            assert "from the registry" in said["tiny-test@champion"] and said["base URL"].startswith("http://127.0.0.1:")
        finally:
            _stopped(proc)


def test_mlflow_ui_lines_the_variants_up_with_no_setup(artifacts, report, tmp_path):
    """MLflow's own UI in headless Chromium over this run's store: the compare page of the variants
    shows their names, grouped quality, fidelity, load and cost metrics and their verdicts; the
    metric pages it links to give each variant's cost and agreement score as the report has them.
    Screenshots are kept under test-output/mlflow-ui/."""
    import mlflow

    from tests.integration.mlflow_ui import Browser, compare_url, metric_url
    from tests.integration.team_server import mlflow_server

    client = mlflow.MlflowClient(f"sqlite:///{artifacts / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quantgate-test").experiment_id
    (parent,) = client.search_runs([experiment], "tags.qg_state = 'complete'", order_by=["attributes.start_time ASC"],
                                   max_results=1)
    children = sorted(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"),
                      key=lambda run: run.info.run_name)
    ids, names = [c.info.run_id for c in children], [c.info.run_name for c in children]
    rows = {row["variant"]: row for row in report["rows"]}
    task = next(iter(rows["q8_0"]["delta_upper"]))
    out = REPO_ROOT / "test-output" / "mlflow-ui"
    with mlflow_server(f"sqlite:///{artifacts / 'mlflow.db'}", tmp_path / "served", tmp_path / "mlflow.log") as url, \
            Browser(out) as browser:
        text = browser.compare_page(compare_url(url, experiment, ids), len(ids), "compare-page")
        assert all(name in text for name in names)
        for key in ("cost/usd_per_1m_tokens", f"quality/{task}/drop_bound", "quality/agreement/score",
                    "fidelity/kld_mean", "load/ttft_p95_ms", "gate/passed"):
            assert key in text, key
        verdicts = ["pass" if rows[name]["passed"] else "fail" for name in names]
        assert "verdict\t" + "\t".join(verdicts) in text.splitlines()
        cost = browser.metric_values(metric_url(url, experiment, ids, "cost/usd_per_1m_tokens"),
                                     "cost/usd_per_1m_tokens", "metric-cost")
        assert cost == {name: rows[name]["capacity"]["usd_per_1m_tokens"]["estimate"] for name in names
                        if rows[name]["capacity"] and rows[name]["capacity"]["usd_per_1m_tokens"]}
        score = browser.metric_values(metric_url(url, experiment, ids, "quality/agreement/score"),
                                      "quality/agreement/score", "metric-agreement-score")
        assert score == {name: rows[name]["score"]["agreement"] for name in names}
        assert len(set(score.values())) > 1  # the variants answer differently: a column of one value proves less
    assert {p.name for p in out.iterdir()} >= {"compare-page.png", "compare-page-metrics.png", "compare-page-tags.png",
                                               "metric-cost.png", "metric-agreement-score.png"}


def test_an_imported_gguf_is_gated_like_a_variant_made_here(first_run, recipe, artifacts, report, tmp_path):
    """A GGUF file made elsewhere (here the leg's own Q8_0 file, copied and renamed, so the answer is
    known) imported by a path relative to the recipe: its type and bits are read from the file, the
    other variants are reused, and it measures as the file it copies."""
    import shutil

    q8_0 = _manifest(artifacts, report, "q8_0")
    shutil.copy(artifacts / "variants" / q8_0["key"] / "model.gguf", tmp_path / "community-model.gguf")
    data = yaml.safe_load(recipe.read_text())
    data["variants"].append({"name": "imported", "kind": "gguf_file", "path": "community-model.gguf"})
    with_import = tmp_path / "with-import.yaml"
    with_import.write_text(yaml.safe_dump(data))
    run = quantgate("run", str(with_import), artifacts=artifacts)
    assert all(f"[{name}] quantize cached" in run.stdout for name, _ in VARIANTS)
    assert "variants added: imported" in run.stdout  # what changed since the last run of this recipe
    newest = max((artifacts / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
    rows = {row["variant"]: row for row in json.loads(newest.read_text())["rows"]}
    imported, copied = rows["imported"], rows["q8_0"]
    manifest = _manifest(artifacts, {"rows": list(rows.values())}, "imported")
    assert (manifest["file_type"], manifest["sha256"], manifest["bits_per_weight"]) == ("Q8_0", q8_0["sha256"],
                                                                                         q8_0["bits_per_weight"])
    assert manifest["imported_from"] == str(tmp_path / "community-model.gguf") and manifest["key"] != q8_0["key"]
    assert imported["score"]["agreement"] == copied["score"]["agreement"]  # loglikelihood-scored: exact
    assert imported["divergence"]["kld_mean"] == copied["divergence"]["kld_mean"]
    assert imported["load"] and imported["passed"] == copied["passed"]


def test_a_kv_cache_variant_serves_the_references_file_with_a_quantized_cache(first_run, recipe, artifacts, report,
                                                                            tmp_path):
    """`kv_cache: q4_0` on the F16 type: no new file, the server and its scorer run a q4_0 cache, and
    what it costs against the reference is the cache's alone (the same weights)."""
    import mlflow

    data = yaml.safe_load(recipe.read_text())
    data["variants"].append({"name": "f16-kv-q4_0", "kind": "gguf", "type": "F16", "kv_cache": "q4_0"})
    with_kv = tmp_path / "with-kv.yaml"
    with_kv.write_text(yaml.safe_dump(data))
    run = quantgate("run", str(with_kv), artifacts=artifacts)
    assert "[f16-kv-q4_0] quantize cached" in run.stdout
    newest = max((artifacts / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
    rows = {row["variant"]: row for row in json.loads(newest.read_text())["rows"]}
    kv, f16 = rows["f16-kv-q4_0"], rows["f16"]
    assert kv["artifact_key"] == f16["artifact_key"]
    # the server log's first line is how it was started: f16's own evals, and the q4_0 ones
    [evals] = _eval_folders(artifacts, f16["artifact_key"], "q4_0")
    assert "--flash-attn on" in (evals / "server.log").read_text().splitlines()[0]
    assert len(_eval_folders(artifacts, f16["artifact_key"])) == 1
    probe = json.loads((evals / "alignment_probe.json").read_text())
    assert probe["passed"]  # the scorer's q4_0 cache agrees with the server's
    # the same weights: every bit of divergence is the cache's
    assert f16["divergence"]["kld_mean"] == 0 and kv["divergence"]["kld_mean"] > 0
    assert kv["score"]["agreement"] != f16["score"]["agreement"] or kv["divergence"]["flip_rate"] > 0
    client = mlflow.MlflowClient(f"sqlite:///{artifacts / 'mlflow.db'}")
    [child] = [r for r in client.search_runs([client.get_experiment_by_name("quantgate-test").experiment_id])
               if r.info.run_name == "f16-kv-q4_0"]
    assert child.data.tags["kv_cache"] == "q4_0" and child.data.params["kv_cache"] == "q4_0"
    card = Path(client.download_artifacts(child.info.run_id, "model_card.md", str(tmp_path))).read_text()
    assert "served by llamacpp with a q4_0 KV cache" in card


def test_an_import_that_is_not_a_gguf_is_refused(recipe, artifacts, tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    data = yaml.safe_load(recipe.read_text())
    data["variants"].append({"name": "imported", "kind": "gguf_file", "path": "weights.gguf"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    proc = quantgate("validate", str(bad), artifacts=artifacts, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "variants[3].path:" in proc.stderr and "is not a GGUF file" in proc.stderr


def _eval_folders(artifacts: Path, artifact_key: str, kv_cache: str | None = None) -> list[Path]:
    """The eval entries measured on one artifact (its server's log names the file it served), served
    with `kv_cache` (None: llama.cpp's default cache; the log's first line is the server's command)."""
    flags = f"--cache-type-k {kv_cache} --cache-type-v {kv_cache}" if kv_cache else "--cache-type-k"
    return [folder for folder in (artifacts / "evals").iterdir()
            if (folder / "result.json").is_file() and artifact_key in (text := (folder / "server.log").read_text())
            and (flags in text.splitlines()[0]) == (kv_cache is not None)]


def _values_by_doc(folder: Path, label: str) -> dict[int, float]:
    result = json.loads((folder / "result.json").read_text())
    lines = (folder / result["tasks"][label]["samples_file"]).read_text().splitlines()
    return {item["doc_id"]: item["value"] for item in map(json.loads, lines)}


def _stopped_tasks(folder: Path) -> list[str]:
    tasks = json.loads((folder / "result.json").read_text())["tasks"]
    return [label for label, score in tasks.items() if score["stopped"]]


def test_sequential_evaluation_stops_where_the_full_items_settle(first_run, recipe, artifacts, report, tmp_path):
    """`evals.sequential` on the same recipe: everything but the variants' evals is reused, each
    single-task eval is scored look by look, and it stops where the first run's full items settle the
    same gate (loglikelihood scoring is exact, so the looks see the very values the full run saw)."""
    from pipeline.measure.sequential import CONTINUE, item_order, look_plan, settle

    data = yaml.safe_load(recipe.read_text())
    data["evals"]["sequential"] = {"looks": 2, "min_items_per_look": 10}
    # qg_length: every variant answers it as the reference does (the shortest choice), so a loose
    # tolerance settles it at the first look; agreement on a random model stays unsettled to the end
    tolerances = {"agreement": 0.05, "qg_length": 0.5}
    data["gates"]["task_tolerances"] = {"qg_length": 0.5}
    path = tmp_path / "sequential.yaml"
    path.write_text(yaml.safe_dump(data))
    run = quantgate("run", str(path), artifacts=artifacts)
    assert "[f16] running task evals" not in run.stdout  # the reference's evals are its own, reused
    assert "[q8_0] sequential evaluation: agreement looks at [20, 40]" in run.stdout
    newest = max((artifacts / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
    rows = {row["variant"]: row for row in json.loads(newest.read_text())["rows"]}
    assert not rows["f16"]["stopped"]
    reference = _eval_folders(artifacts, _row(report, "f16")["artifact_key"])
    assert len(reference) == 1
    stops = 0
    for name, _ in VARIANTS[1:]:
        row = rows[name]
        # a group is scored whole, and the echo tasks (12 items) are too small for two looks of 10
        assert set(row["stopped"]) == {"agreement", "qg_length"}
        assert row["items"]["qg_echo"] == len(WORDS) and row["items"]["lengths-pooled"] == 4 * len(WORDS)
        folders = _eval_folders(artifacts, row["artifact_key"])
        looked, = [f for f in folders if _stopped_tasks(f)]
        full, = [f for f in folders if f != looked]
        for label in ("agreement", "qg_length"):
            ours, theirs = _values_by_doc(full, label), _values_by_doc(reference[0], label)
            order = item_order(list(theirs), label)
            plan = look_plan(len(order), 2, 0.95, 0.3, 10, 2000)
            expected = settle([theirs[d] for d in order], [ours[d] for d in order], tolerances[label], plan)
            assert expected.outcome != CONTINUE
            scored = _values_by_doc(looked, label)
            assert set(scored) == set(order[:expected.n]) and all(scored[d] == ours[d] for d in scored)
            assert row["items"][label] == expected.n
            assert row["stopped"][label].startswith(f"{expected.outcome} at ") and f"look {expected.look} of 2" in \
                row["stopped"][label]
            assert (looked / "lm-eval" / label / "look-1").is_dir()
            stops += expected.n < len(order)
        assert row["items"]["qg_length"] == len(WORDS)  # a pass at the first look: half of its 24 items
    document = (newest.with_suffix("") / "report.md").read_text()
    assert "## Sequential evaluation" in document and "**q8_0** agreement: " in document
    assert stops >= 2


def _usd(row: dict) -> dict | None:
    """The row's cost interval when its load passes (its SLO met, a cost known), else None."""
    capacity = row["capacity"]
    return capacity["usd_per_1m_tokens"] if capacity and capacity["slo_level"] else None


def test_cheapest_first_search_prices_first_and_reaches_the_exhaustive_decision(first_run, recipe, artifacts,
                                                                                report, tmp_path):
    """`promotion.search: cheapest_first` on new evals (fewer items; the load sweeps are the first
    run's, cached): every variant is priced before any is evaluated, they are evaluated from the
    cheapest up, and the same recipe searched exhaustively afterwards (measuring only what was left
    out) reaches the same winner and tie. A replica here holds Q4_K_M but not Q8_0 (memory set
    between their needs), so Q8_0 cannot pass and is left out; the tiny model's cost intervals are
    too wide to leave anything out on cost (the unit tests do). The rule is restated here from the
    exhaustive table."""
    data = yaml.safe_load(recipe.read_text())
    data["evals"]["limit"] = EVAL_LIMIT - 10
    data["promotion"] = {"search": "cheapest_first"}
    need = {name: sum(_row(report, name)["capacity"]["memory"][part] for part in ("weights_bytes", "kv_cache_bytes"))
            for name in ("q4_k_m", "q8_0")}
    data["hardware"].update(memory_gib=(need["q4_k_m"] + need["q8_0"]) / 2 / 2**30, accelerators_per_replica=1)
    searched_recipe = tmp_path / "cheapest-first.yaml"
    searched_recipe.write_text(yaml.safe_dump(data))
    searched = quantgate("run", str(searched_recipe), artifacts=artifacts, check=False)
    assert searched.returncode in (0, 4), searched.stdout + searched.stderr
    out = searched.stdout
    assert "load sweep:" not in out  # priced from the first run's cached sweeps
    priced_at = out.index("cheapest-first search: ")
    evaluated = [name for name, _ in VARIANTS[1:] if f"[{name}] running task evals" in out]
    assert all(out.index(f"[{name}] running task evals") > priced_at for name in evaluated)
    searched_path = max((artifacts / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
    searched_report = json.loads(searched_path.read_text())
    document = (searched_path.with_suffix("") / "report.md").read_text()
    searched_rows = {row["variant"]: row for row in searched_report["rows"]}
    assert sorted(evaluated, key=lambda n: out.index(f"[{n}] running task evals")) == \
        sorted(evaluated, key=lambda n: (_usd(searched_rows[n])["estimate"], n))

    data["promotion"] = {"search": "exhaustive"}
    exhaustive_recipe = tmp_path / "exhaustive.yaml"
    exhaustive_recipe.write_text(yaml.safe_dump(data))
    exhaustive = quantgate("run", str(exhaustive_recipe), artifacts=artifacts, check=False)
    assert exhaustive.returncode == searched.returncode
    report_after = json.loads(max((artifacts / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime)
                              .read_text())
    assert (report_after["winner"], report_after["tied"]) == (searched_report["winner"], searched_report["tied"])
    rows = {row["variant"]: row for row in report_after["rows"]}
    passing = [row for row in rows.values() if row["passed"]]
    cheapest = min(passing, key=lambda r: (_usd(r)["estimate"], r["variant"])) if passing else None

    def apart(a: dict, b: dict) -> bool:
        return (a["low"] is not None and b["high"] is not None and a["low"] > b["high"]) or \
            (a["high"] is not None and b["low"] is not None and a["high"] < b["low"])

    expected = {name for name, row in rows.items() if not row["reference"] and (
        _usd(row) is None or (cheapest is not None and (_usd(row)["estimate"], name) >
                              (_usd(cheapest)["estimate"], cheapest["variant"]) and apart(_usd(row), _usd(cheapest))))}
    left_out = {name for name, row in searched_rows.items() if row["skipped"]}
    assert left_out == expected and "q8_0" in left_out
    for name in left_out:
        row = searched_rows[name]
        assert f"[{name}] running task evals" not in out and f"[{name}] running task evals" in exhaustive.stdout
        assert row["score"]["agreement"] is None and row["reasons"][0].startswith("not evaluated (cheapest-first")
        assert row["usd_per_1m_tokens"] == rows[name]["usd_per_1m_tokens"]  # priced: its cost is shown
        assert f"| {name} | llamacpp |" in document and "not evaluated" in document
    assert all(f"[{name}] running task evals" not in exhaustive.stdout for name in evaluated)
