"""Command line: `quantgate validate | plan | run RECIPE`.

User errors (bad recipe, missing tool environment) print one message and exit 2, never a traceback.
Exit codes of `run`: 0 a variant was promoted; 1 our own bug (its traceback shown); 2 bad input; 3 the
run is broken (a tool failed for a reference, for every variant, or for a step every variant needs);
4 the run measured what it set out to and nothing passed the gates; 130 interrupted (Ctrl-C), 143
terminated (SIGTERM). Exit 3 also when everything was measured but the tracking store did not take it.
Everything printed that comes from a recipe, a tool or a log is escaped: a bracketed variant label
or a closing tag in a name or a message is text, never rich markup.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.artifacts import DISK_FULL
from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError
from pipeline.settings import Settings
from pipeline.toolenv import ToolEnvMissing, ToolFailed

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# Wide enough for the summary table when output goes to a file or a CI log.
# emoji=False: a recipe value with ":smile:" prints as written
console = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 260)
err = Console(stderr=True, highlight=False, emoji=False)

USER_ERRORS = (RecipeError, ToolEnvMissing)
VERDICT_STYLE = {"promoted": "[bold green]PROMOTED[/]", "pass": "[green]pass[/]", "skipped": "[yellow]not evaluated[/]",
                 "fail": "[red]fail[/]"}
EXIT_USER_ERROR, EXIT_BROKEN, EXIT_NOTHING_PASSED, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 3, 4, 130, 143


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _settings() -> Settings:
    """The host's settings (QUANTGATE_* variables); a bad value is a user error."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        _fail("host settings: " + "; ".join(f"QUANTGATE_{'.'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
                                            for e in exc.errors()))
        raise  # unreachable: _fail exits


@app.command()
def validate(recipe: Path = typer.Argument(..., help="recipe YAML file")) -> None:
    """Check a recipe without running anything."""
    try:
        loaded = load_recipe(recipe)
    except USER_ERRORS as exc:
        _fail(str(exc))
    console.print(escape(f"{recipe}: ok — {len(loaded.variants)} variants: "
                         + ", ".join(v.name for v in loaded.variants)))


@app.command()
def plan(recipe: Path = typer.Argument(..., help="recipe YAML file")) -> None:
    """Show what a run would do and what is already cached."""
    from pipeline.plan import make_plan

    settings = _settings()
    try:
        planned = make_plan(load_recipe(recipe), settings)
    except USER_ERRORS as exc:
        _fail(str(exc))
    for warning in planned.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True, soft_wrap=True)
    table = Table(title=escape(f"plan for {recipe} (recipe {planned.recipe_hash})"))
    for column in ("variant", "engine", "quantization", "artifact key", "quantize", "evals", "load"):
        table.add_column(column)
    state = {True: "[green]cached[/]", False: "[yellow]to do[/]"}
    for v in planned.variants:
        params = " ".join(f"{k}={val}" for k, val in v.params.items() if k != "kind") \
            + (f", KV cache {v.kv_cache}" if v.kv_cache else "")
        stages = [state[v.quantize_cached], state[v.eval_cached], state[v.load_cached]]
        table.add_row(escape(v.name) + (" (ref)" if v.reference else ""), v.engine, escape(f"{v.kind} {params}"),
                      v.artifact_key, *(["[red]not run here[/]"] * 3 if v.refused else stages))
    console.print(table)
    for name, reason in planned.refused().items():
        console.print(f"  [red]✗[/] {escape(name)} is not run here: {escape(reason)}")
    console.print(f"model source {planned.source_key}: {'cached' if planned.source_cached else 'to materialise'};"
                  f" {planned.work_left} of {len(planned.variants)} variants have work left")


@app.command()
def new(
    model: str = typer.Argument(..., help="HF hub id, HF model directory, or .gguf file"),
    out: Path = typer.Option(..., help="where to write the recipe"),
) -> None:
    """Write a recipe for MODEL from recipes/template.yaml (what `make quantize` runs)."""
    import re

    import yaml

    from pipeline.settings import REPO_ROOT

    template = yaml.safe_load((REPO_ROOT / "recipes" / "template.yaml").read_text())
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            _fail(f"MODEL: GGUF file {model} not found")
        template["model"] = {"kind": "gguf", "path": str(path.resolve())}
    elif path.is_dir():
        template["model"] = {"kind": "local", "path": str(path.resolve())}
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", model) and not path.exists():
        template["model"] = {"kind": "hf", "repo_id": model}
    else:
        _fail(f"MODEL: {model!r} is neither an existing model directory, a .gguf file, nor an HF id (owner/name)")
    slug = re.sub(r"[^a-z0-9_.-]+", "-", (path.stem if path.exists() else model.split("/")[-1]).lower()).strip("-.")
    template["name"] = slug or "model"
    template["tracking"]["registered_model"] = template["name"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(template, sort_keys=False))
    try:
        load_recipe(out)
    except RecipeError as exc:
        out.unlink()
        _fail(str(exc))
    console.print(escape(f"wrote {out} for {model}"))


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML file"),
    force: list[str] = typer.Option([], "--force", metavar="STAGE",
                                    help="make this stage again instead of reusing it (repeatable): "
                                         "source, quantize, parity, divergence, evals, load; record: decide "
                                         "and record again though nothing changed"),
) -> None:
    """Quantize, serve, evaluate, benchmark, record and promote. Running it again after an
    interruption finishes the run from what is cached, into the same MLflow parent run."""
    from pipeline import run as pipeline_run

    settings = _settings()
    if unknown := [stage for stage in force if stage not in pipeline_run.FORCEABLE]:
        _fail(f"--force: unknown stage {unknown[0]!r} (allowed: {', '.join(pipeline_run.FORCEABLE)})")
    try:
        loaded = load_recipe(recipe)
        started = time.monotonic()
        with console.status("starting", spinner="dots") as status:
            def say(message: str) -> None:
                # variant labels like "[f16]" are text, not rich markup
                console.print(f"[dim]{time.monotonic() - started:7.1f}s[/] {escape(message)}", soft_wrap=True)
                console.file.flush()  # progress shows as it happens in logs and pipes, too
                status.update(escape(message))

            outcome = pipeline_run.run(loaded, recipe, settings, say, frozenset(force))
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to finish (what is done is cached)")
        raise typer.Exit(EXIT_INTERRUPTED)
    except Terminated:
        err.print("terminated: run the same command again to finish (what is done is cached)")
        raise typer.Exit(EXIT_TERMINATED)
    except USER_ERRORS as exc:
        _fail(str(exc))
    except pipeline_run.NotRecorded as exc:
        err.print(f"[bold red]not recorded:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_BROKEN)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise  # our own bug: its traceback
        err.print(f"[bold red]disk full:[/] {escape(str(exc))}; free space under {escape(str(settings.artifacts))}"
                  " and run the same command again (what is done is cached)", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_BROKEN)
    except ToolFailed as exc:  # a step every variant needs broke (the model source): one line, its log named
        err.print(f"[bold red]failed:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_BROKEN)
    print_summary(outcome)
    if outcome.broken:
        err.print(f"[bold red]run broken:[/] {escape('; '.join(outcome.broken))}", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_BROKEN)
    if outcome.report.winner is None:
        raise typer.Exit(EXIT_NOTHING_PASSED)


def _registry_client(tracking_uri: str | None):
    import mlflow

    settings = _settings()
    return mlflow.MlflowClient(tracking_uri or settings.tracking_uri or settings.default_tracking_uri())


TRACKING_URI_HELP = "MLflow tracking URI (default: QUANTGATE_TRACKING_URI, else the sqlite store under artifacts/)"


@app.command()
def status(
    model: str = typer.Argument(..., help="registered model name (the recipe's tracking.registered_model)"),
    alias: str = typer.Option("champion", help="the alias to look at"),
    tracking_uri: str | None = typer.Option(None, help=TRACKING_URI_HELP),
) -> None:
    """Which version is champion, since when, why, what it was chosen among, and the previous one."""
    from pipeline import registry

    try:
        now = registry.status(_registry_client(tracking_uri), model, alias)
    except registry.RegistryError as exc:
        _fail(str(exc))
    champion = now.champion
    console.print(escape(f"{model}: {alias} is version {champion.version} ({champion.variant}, sha256"
                         f" {(champion.sha256 or '?')[:12]}), since {champion.promoted_at or 'unknown'}"))
    if champion.figures:
        console.print(escape("  figures: " + ", ".join(f"{k} {v}" for k, v in champion.figures.items())))
    if now.decision:
        console.print(escape(f"  why: {now.decision}"))
    if now.decided_among:
        console.print(escape("  chosen among: " + ", ".join(f"{name} {verdict}"
                                                             for name, verdict in now.decided_among.items())))
    previous = now.previous
    console.print(escape(f"  previous: version {previous.version} ({previous.variant}), {alias} since"
                         f" {previous.promoted_at or 'unknown'}" if previous else "  previous: none"))
    for reason in now.rollbacks:
        console.print(escape(f"  rolled back before: {reason}"))


@app.command()
def rollback(
    model: str = typer.Argument(..., help="registered model name"),
    reason: str = typer.Option(..., help="why; recorded with the rollback"),
    alias: str = typer.Option("champion", help="the alias to move back"),
    tracking_uri: str | None = typer.Option(None, help=TRACKING_URI_HELP),
) -> None:
    """Make the previous version the champion again (the current one becomes `previous`), recorded as a run."""
    from pipeline import registry

    try:
        before, after, run_id = registry.rollback(_registry_client(tracking_uri), model, reason, alias)
    except registry.RegistryError as exc:
        _fail(str(exc))
    console.print(escape(f"{model}: {alias} is version {after.version} ({after.variant}) again; version"
                         f" {before.version} ({before.variant}) is now 'previous'; recorded as run {run_id}"))


@app.command()
def serve(
    model: str = typer.Argument(..., help="MODEL or MODEL@ALIAS (default alias: champion)"),
    tracking_uri: str | None = typer.Option(None, help=TRACKING_URI_HELP),
) -> None:
    """Serve a registered version as it was measured (its engine and settings) on 127.0.0.1 with an
    API key, for any OpenAI client; Ctrl-C stops it."""
    from pipeline import serve as serving
    from pipeline import specs
    from pipeline.artifacts import Store
    from pipeline.registry import RegistryError
    from pipeline.toolenv import tool_env

    settings = _settings()
    store = Store(settings.artifacts, lambda message: console.print(escape(message)))
    try:
        plan = serving.resolve(_registry_client(tracking_uri), model, store)
        spec = specs.engine(plan.engine)
        log = settings.artifacts / "serve" / f"{plan.model}-v{plan.version}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        engine = spec.make(artifact=plan.artifact, config=plan.config, env=tool_env(spec.env, settings.envs),
                           artifacts_root=settings.artifacts, log_path=log)
        settings_text = " ".join(f"{k}={v}" for k, v in plan.config.model_dump().items())
        console.print(escape(f"{plan.model}@{plan.alias}: version {plan.version} ({plan.artifact.variant}, sha256"
                             f" {plan.artifact.manifest['sha256'][:12]}"
                             + (", from the registry" if plan.from_registry else "")
                             + f") on {plan.engine} as measured: {settings_text}"), soft_wrap=True)
        with engine:
            console.print(f"base URL: {engine.base_url}/v1", soft_wrap=True)
            console.print(f"API key:  {engine.api_key}", soft_wrap=True)
            console.print(f"model:    {engine.served_model}", soft_wrap=True)
            console.print(escape(f"log:      {log}"), soft_wrap=True)
            console.print("Ctrl-C stops it.")
            console.file.flush()
            while True:
                time.sleep(2)
                engine.check()  # a server that died is said, not waited on
    except (KeyboardInterrupt, Terminated):
        console.print("stopped")
    except (RegistryError, *USER_ERRORS) as exc:
        _fail(str(exc))
    except ToolFailed as exc:  # the server did not start or died: one line, its log named
        err.print(f"[bold red]failed:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_BROKEN)


def print_summary(outcome) -> None:
    report, recipe = outcome.report, outcome.recipe
    table = Table(title=escape(f"{report.recipe}: variants vs reference"))
    table.add_column("variant")
    table.add_column("engine")
    table.add_column("bits/w", justify="right")
    table.add_column("MB", justify="right")
    for task in report.tasks:
        table.add_column(escape(f"{task} {report.metrics.get(task, 'score')}"), justify="right")
        table.add_column("Δ (bound)", justify="right")
    for column in ("KLD", "flips", "SLO load", "tok/s at SLO", "replicas", "$/1M tok", "verdict"):
        table.add_column(column, justify="right")
    for row in report.rows:
        capacity, div = row.capacity, row.divergence
        cells = [escape(row.variant) + (" (ref)" if row.reference else ""), row.engine, _fmt(row.bits_per_weight, 2),
                 _fmt(row.file_mb, 0)]
        for task in report.tasks:
            bound = row.delta_upper.get(task)
            delta = _fmt(row.delta.get(task), 3, signed=True)
            informative = "" if task not in row.uninformative else " (uninf.)"
            cells += [_fmt(row.score.get(task), 3) + informative,
                      delta + (f" ({_fmt(-bound, 3, signed=True)})" if bound is not None else "")]
        cells += [_fmt(div.kld_mean if div else None, 4), _fmt(div.flip_rate if div else None, 3)]
        at_slo = capacity.slo_level if capacity else None
        cells += [escape(at_slo.label) if at_slo else "–", _interval(capacity.output_tokens_per_s if capacity else None, 1),
                  _interval(capacity.replicas if capacity else None, 0),
                  _interval(capacity.usd_per_1m_tokens if capacity else None, 3),
                  VERDICT_STYLE[row.verdict]]
        table.add_row(*cells)
    console.print(table)
    print_load(report, recipe)
    for row in report.rows:
        for reason in row.reasons:
            console.print(f"  [red]✗[/] {escape(row.variant)}: {escape(reason)}")
    for task in report.tasks:
        why = next((r.uninformative[task] for r in report.rows if r.reference and task in r.uninformative), None)
        if why:
            console.print(f"  [yellow]~[/] {escape(task)}: {escape(why)}")
    console.print(f"[bold]decision:[/] {escape(report.decision)}")
    if report.registry:
        console.print(f"[bold]registry:[/] {escape(report.registry.name)} → {escape(report.registry.note)}")
    console.print(escape(f"MLflow: {report.tracking_uri} (parent run {report.mlflow_parent_run}); `make ui` to browse"))
    console.print(escape(f"report: {outcome.report_path}; wall time {outcome.seconds:.0f} s; quantgate's own CPU"
                         f" time {outcome.own_cpu_seconds:.1f} s (the rest is its tools and servers)"))


def print_load(report, recipe) -> None:
    """Each variant's load levels: the SLO's percentile of each objective, throughput, errors, verdict."""
    slo = recipe.slo
    table = Table(title=f"load sweep ({recipe.load.profile}); SLO at p{slo.percentile:g}: "
                        + (", ".join(f"{m.removesuffix('_ms').upper()} ≤ {v:g} ms" for m, v in slo.limits().items())
                           or "no latency objective") + f", error rate ≤ {slo.max_error_rate:g}")
    for column in ("variant", "level", "requests", "errors"):
        table.add_column(column, justify="right")
    for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
        table.add_column(f"p{slo.percentile:g} {metric.removesuffix('_ms').upper()} ms", justify="right")
    for column in ("tok/s", "goodput req/s", "SLO"):
        table.add_column(column, justify="right")
    for row in report.rows:
        verdicts = {v.level: v for v in row.capacity.levels} if row.capacity else {}
        for level in row.load:
            verdict = verdicts.get(level.level)
            errors = ", ".join(f"{n} {cls}" for cls, n in level.errors.items()) or "0"
            latencies = [_fmt(_at(level, metric, slo.percentile), 0) for metric in ("ttft_ms", "tpot_ms", "e2e_ms")]
            requests = f"{level.measured}" + (f" in {level.rounds} passes" if level.rounds > 1 else "")
            table.add_row(escape(row.variant), escape(level.label), requests, escape(errors), *latencies,
                          _interval(level.output_tokens_per_s, 1), _fmt(verdict.goodput_rps if verdict else None, 2),
                          "[green]met[/]" if verdict and verdict.met else "[red]missed[/]")
    console.print(table)


def _at(level, metric: str, percentile: float) -> float | None:
    """A level's latency at the SLO's percentile (the report's summaries include it)."""
    figures = level.latency_ms.get(metric, {})
    named = figures.get(f"p{percentile:g}")
    return named.estimate if named else None


def _interval(interval, digits: int) -> str:
    if interval is None:
        return "–"
    if interval.low is None or interval.high is None:
        return f"{_fmt(interval.estimate, digits)} (unbounded)"
    return f"{_fmt(interval.estimate, digits)} [{_fmt(interval.low, digits)}–{_fmt(interval.high, digits)}]"


def _fmt(value, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


class Terminated(BaseException):
    """SIGTERM (a scheduler stopping the job): unwound like Ctrl-C, so servers and tools are
    stopped and nothing half-made is left as an entry."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        err.print("terminated")
        sys.exit(EXIT_TERMINATED)


if __name__ == "__main__":
    main()
