"""One variant, start to finish: quantize -> serve -> measure, with typed inputs and result.

The local loop in `run.py` calls `measure_variant` once per variant, references first; an executor
elsewhere can call the same function. The server is started once, and only if a measurement that
needs it is missing from the store; each measurement is cached on its own key, and a failed one is
returned as a reason (never cached), its logs kept under failed/.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from pipeline import quantize, secrecy, specs
from pipeline.artifacts import Store
from pipeline.engines import EngineContext
from pipeline.engines.server import ServerFailed
from pipeline.measure import NotMeasurable, divergence, evals, load, parity, tasks
from pipeline.measure.evals import EvalResult
from pipeline.measure.keys import MeasurementKeys, engine_identity, keys_for
from pipeline.measure.parity import ParityResult
from pipeline.quantize import Artifact, quantizer_for
from pipeline.recipe.schema import Recipe, VariantConfig
from pipeline.source import SourceResult
from pipeline.toolenv import TRANSFORMERS, ToolFailed, tool_env
from pipeline.workers.messages import DivergenceMetrics, LoadOutput, StoppingRule

SERVER_LOG = "server.log"
# what can be measured on a variant's server, by the names failures are reported under
MEASUREMENTS = ("engine parity", "divergence", "evals", "load sweep")
EVERYTHING = frozenset(MEASUREMENTS)
LOAD_ONLY = frozenset({"load sweep"})  # what prices a variant


@dataclass(frozen=True, kw_only=True)
class VariantJob:
    """Everything one variant's work needs; `reference` is its engine's reference artifact (None for
    the reference itself, which is compared with itself)."""

    recipe: Recipe
    variant: VariantConfig
    source: SourceResult
    reference: Artifact | None
    recipe_hash: str
    artifacts_root: Path
    envs_root: Path
    measure: frozenset[str] = EVERYTHING  # of MEASUREMENTS (cheapest-first search prices a variant first)


@dataclass(kw_only=True)
class VariantResult:
    """What was made and measured for one variant; a field left None has its reason in `<field>_error`."""

    name: str
    engine: str
    reference: bool
    kv_cache: str | None = None  # the KV cache type it is served with (None: the engine section's)
    not_run: str | None = None  # the plan refused it here (measured not to run on this engine build)
    skipped: str | None = None  # cheapest-first search: priced, but its quality could not change the decision
    artifact: Artifact | None = None
    quantize_error: str | None = None
    parity: ParityResult | None = None  # references only: engine vs transformers
    parity_error: str | None = None
    divergence: DivergenceMetrics | None = None
    divergence_error: str | None = None
    evals: EvalResult | None = None
    eval_error: str | None = None
    load: LoadOutput | None = None  # every request of the load sweep; judged and priced by capacity.py
    load_error: str | None = None
    server_log: Path | None = None
    load_folder: Path | None = None  # the cached load-sweep entry

    def errors(self) -> dict[str, str]:
        return {what: error for what, error in (("quantize", self.quantize_error), ("engine parity", self.parity_error),
                                                ("divergence", self.divergence_error), ("evals", self.eval_error),
                                                ("load", self.load_error)) if error}

    def failures(self) -> list[str]:
        """One line per distinct failure, naming every step it stopped ("evals, load FAILED: ...")."""
        steps: dict[str, list[str]] = {}
        for what, error in self.errors().items():
            steps.setdefault(error, []).append(what)
        return [f"{', '.join(whats)} FAILED: {error}" for error, whats in steps.items()]

    def files(self) -> dict[str, list[Path]]:
        """MLflow artifact folder -> files to log there."""
        files: dict[str, list[Path]] = {}
        if self.artifact:
            files["artifact"] = [self.artifact.folder / "manifest.json"]
        if self.evals:
            folder = self.evals.folder
            files["evals"] = [folder / "result.json", folder / "alignment_probe.json"]
            files["evals"] += [folder / score.samples_file for score in self.evals.tasks.values()]
        if self.load_folder:
            files["load"] = [self.load_folder / "result.json", *sorted(self.load_folder.glob("guidellm*.json"))]
        if self.server_log:
            files["logs"] = [self.server_log]
        return files


def measure_variant(job: VariantJob, say: Callable[[str], None] = lambda _: None,
                    store: Store | None = None) -> VariantResult:
    """`store`: the run's own, so that a shared step that failed for one variant is not retried for
    the next (default: a new one over `job.artifacts_root`)."""
    variant, recipe = job.variant, job.recipe
    store = store or Store(job.artifacts_root)
    result = VariantResult(name=variant.name, engine=variant.engine, reference=variant.reference,
                           kv_cache=variant.kv_cache)
    t0 = time.monotonic()
    try:
        quantizer = quantizer_for(variant.kind, job.envs_root, recipe)
        with store.lock(quantize.STAGE, quantizer.key(variant, job.source)):  # a second run waits, then reuses
            artifact = quantizer.quantize(variant, job.source, store, job.recipe_hash)
    except ToolFailed as exc:  # one broken variant must not sink the others; it fails its gate
        result.quantize_error = str(exc)
        return result
    result.artifact = artifact
    manifest = artifact.manifest
    say(f"quantize {'cached' if artifact.cached else f'done in {time.monotonic() - t0:.1f} s'}"
        f" ({manifest['file_bytes'] / 1e6:.0f} MB, {manifest['bits_per_weight']} bits/weight)")
    scratch_root = store.root / "tmp"
    scratch_root.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(dir=scratch_root, prefix=f"serve-{artifact.variant}-"))
    try:
        _measure(job, artifact, store, result, logdir / SERVER_LOG, say)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return result


def _measure(job: VariantJob, artifact: Artifact, store: Store, result: VariantResult, log_path: Path,
             say: Callable[[str], None]) -> None:
    recipe, variant, wanted = job.recipe, job.variant, job.measure
    spec = specs.engine(variant.engine)
    engine_config = recipe.engine_config(variant.engine, variant)
    engine = EngineContext(variant.engine, spec.capabilities(engine_config), tool_env(spec.env, job.envs_root))
    reference = artifact if variant.reference else job.reference

    # What is cached already, each on its own key.
    keys = keys_for(recipe, variant, artifact.key, reference.key if reference else None, job.envs_root)
    identity = engine_identity(recipe, variant.engine, job.envs_root, variant).key_part()
    result.evals, result.load = evals.cached(store, keys.evals), load.cached(store, keys.load)
    if variant.reference:
        result.parity = parity.cached(store, keys.parity)
    div_method = keys.divergence_method
    if reference is None:
        result.divergence_error = f"no reference artifact on engine {engine.name} to compare with"
    elif div_method is None:
        result.divergence_error = f"engine {engine.name}: {divergence.NOT_MEASURABLE}"
    else:
        result.divergence = divergence.cached(store, keys.divergence)
    # Exact divergence needs no server: take it first.
    if "divergence" in wanted and reference is not None and div_method is not None and result.divergence is None \
            and not divergence.needs_server(engine.capabilities):
        try:
            result.divergence = divergence.run(engine, artifact, reference, store, recipe.divergence, identity,
                                               recipe.timeouts.divergence)
            _say_divergence(say, reference, result.divergence)
        except (ToolFailed, NotMeasurable) as exc:
            result.divergence_error = _reason(exc)

    todo_parity = "engine parity" in wanted and variant.reference and result.parity is None
    todo_div = "divergence" in wanted and reference is not None and div_method is not None \
        and result.divergence is None and result.divergence_error is None
    todo_evals = "evals" in wanted and result.evals is None
    todo_load = "load sweep" in wanted and result.load is None
    if not (todo_parity or todo_div or todo_evals or todo_load):
        result.load_folder = store.entry(load.STAGE, keys.load) if store.has(load.STAGE, keys.load) else None
        result.server_log = result.load_folder / SERVER_LOG if result.load_folder else None
        return

    built: list[Path] = []
    during: str | None = None  # the measurement in progress, whose number a dead server voids
    try:
        say(f"starting {engine.name} server")
        with spec.make(artifact=artifact, config=engine_config, env=engine.env, artifacts_root=store.root,
                       log_path=log_path) as server:
            engine.server = server
            say(f"server ready in {server.ready_seconds} s")
            if todo_parity:
                during = "engine parity"
                try:
                    result.parity = parity.run(engine, artifact, store, recipe.parity, job.source,
                                               tool_env(TRANSFORMERS, job.envs_root), keys.parity, recipe.timeouts.parity)
                    say(f"engine parity vs transformers: mean |Δ logprob| {result.parity.mean_abs_diff} nats/token")
                except (ToolFailed, httpx.HTTPError, NotMeasurable) as exc:
                    result.parity_error = _reason(exc)
                server.check()
            if todo_div:
                assert reference is not None
                during = "divergence"
                try:
                    result.divergence = divergence.run(engine, artifact, reference, store, recipe.divergence,
                                                       identity, recipe.timeouts.divergence)
                    _say_divergence(say, reference, result.divergence)
                except (ToolFailed, httpx.HTTPError, NotMeasurable) as exc:
                    result.divergence_error = _reason(exc)
                server.check()
            if todo_evals:
                say("running task evals")
                during = "evals"
                try:
                    resolved = tasks.resolve(recipe.evals, recipe.engines_used(), job.envs_root)
                    result.evals = evals.run(engine, artifact, store, resolved, recipe.evals, keys.evals,
                                             recipe.timeouts.evals, _stopping(recipe, store, resolved, keys, say))
                    built.append(result.evals.folder)
                except (ToolFailed, evals.EvalFailed, NotMeasurable) as exc:
                    result.eval_error = str(exc)
                server.check()
            if todo_load:
                sweep = recipe.load
                say(f"load sweep: {', '.join(sweep.level_name(level) for level in sweep.levels)},"
                    f" {sweep.requests_per_level} requests each" + (f", {sweep.repeats} passes" if sweep.repeats > 1 else ""))
                during = "load sweep"
                try:
                    result.load = load.run(engine, tool_env(load.ENV, job.envs_root), store, sweep,
                                           job.source.model_dir, keys.load)
                    built.append(store.entry(load.STAGE, keys.load))
                except load.NotCached as exc:  # failed requests may be passing trouble: judged, not cached
                    result.load = exc.output
                    say(f"load sweep: {load.failed_requests(exc.output)} requests failed; result not cached")
                except ToolFailed as exc:
                    result.load_error = str(exc)
                server.check()
            during = None
    except ServerFailed as exc:
        if during is not None:  # what was measured while the server died is void, cached or not
            say(f"server died during the {during}: its results are discarded")
            _discard(store, result, keys, during, built)
        if failed := _keep_failed_log(store, artifact, log_path):
            exc.log_path, log_path = failed, failed  # the scratch copy goes when the variant is done
        reason = f"server failed{f' during the {during}' if during else ''}: {exc}"
        if todo_div and result.divergence is None:
            result.divergence_error = result.divergence_error or reason
        if todo_parity and result.parity is None:
            result.parity_error = result.parity_error or reason
        if todo_evals:
            result.eval_error = result.eval_error or (None if result.evals else reason)
        if todo_load:
            result.load_error = result.load_error or (None if result.load else reason)
    finally:
        for folder in built:
            # an entry another run made while this one waited keeps its own server's log
            if log_path.is_file() and not (folder / SERVER_LOG).exists():
                secrecy.copy_redacted(log_path, folder / SERVER_LOG)
    result.server_log = next((f / SERVER_LOG for f in built if (f / SERVER_LOG).is_file()), None)
    result.load_folder = store.entry(load.STAGE, keys.load) if store.has(load.STAGE, keys.load) else None


def _reason(exc: Exception) -> str:
    """A failure as one line: a tool's own message, or an HTTP error's kind and text."""
    return str(exc) if isinstance(exc, (ToolFailed, NotMeasurable)) else f"{type(exc).__name__}: {exc}"


# a measurement in progress -> its stage, its key in MeasurementKeys, its result and error fields
MEASURED = {
    "engine parity": (parity.STAGE, "parity", "parity", "parity_error"),
    "divergence": (divergence.STAGE, "divergence", "divergence", "divergence_error"),
    "evals": (evals.STAGE, "evals", "evals", "eval_error"),
    "load sweep": (load.STAGE, "load", "load", "load_error"),
}


def _discard(store: Store, result: VariantResult, keys: MeasurementKeys, during: str, built: list[Path]) -> None:
    """Void the measurement taken while the server died: its result and its store entry (moved to
    failed/, logs kept), so neither this run nor a later one reads it."""
    stage, key_field, value_field, error_field = MEASURED[during]
    setattr(result, value_field, None)
    setattr(result, error_field, None)
    if (key := getattr(keys, key_field)) is not None:
        store.discard(stage, key)
        built[:] = [folder for folder in built if folder != store.entry(stage, key)]


def _stopping(recipe: Recipe, store: Store, resolved: list[tasks.ResolvedTask], keys: MeasurementKeys,
              say: Callable[[str], None]) -> dict[str, StoppingRule]:
    """Sequential evaluation's stopping rules, from the reference's evals (none measured: every item)."""
    if recipe.evals.sequential is None or keys.reference_evals is None:
        return {}
    reference = evals.cached(store, keys.reference_evals)
    if reference is None:
        say("sequential evaluation: the reference has no evals to stop on; scoring every item")
        return {}
    rules = evals.stopping_rules(resolved, reference, recipe.evals.sequential, recipe.gates)
    if rules:
        say(f"sequential evaluation: {', '.join(f'{label} looks at {rule.sizes}' for label, rule in rules.items())}")
    return rules


def _say_divergence(say: Callable[[str], None], reference: Artifact, metrics: DivergenceMetrics) -> None:
    say(f"divergence vs {reference.variant}: KL {metrics.kld_mean:.4f}, flips {metrics.flip_rate:.3f}"
        f" ({metrics.seconds} s)")


def _keep_failed_log(store: Store, artifact: Artifact, log_path: Path) -> Path | None:
    if not log_path.is_file():
        return None
    target = store.root / "failed" / f"serve-{artifact.variant}-{artifact.key}.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    secrecy.copy_redacted(log_path, target)
    return target

