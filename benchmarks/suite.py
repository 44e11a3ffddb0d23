"""`make bench`: the time to a decision, each figure a ratio measured side by side in one run.

Parts (`--parts`, default all; each replaces its own entry in --out, so parts run on different days
add up to one file):
- cli: `quantgate --help` and `quantgate validate recipes/demo.yaml` (target < 1 s each);
- rerun: a small llama.cpp recipe from an empty store, the same again (no change: target <= 3 s),
  then with one more variant, against that variant's own cost from an empty store (target ~1x);
- by_hand: the pipeline against the same tools run by hand in sequence (benchmarks/by_hand.py) on
  the vLLM leg (target <= 0.6x);
- decode: batch-1 decode of the llama.cpp Q4_K_M and the vLLM reference against the memory
  bandwidth measured here (benchmarks/decode_bound.py);
- decision: a recipe (default the demo) run exhaustively and then cheapest-first with sequential
  evaluation, each from an empty store: the fast run's minutes (target <= 25) and whether the
  verdicts are the same. Hours on a 2-core CPU host: `--decision-engines llamacpp` keeps one leg.

Every pipeline run is `quantgate run` in its own process, its own artifacts folder and MLflow store
(under --work), timed from start to exit. Writes --out (JSON) and the same path with .md (a table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from pipeline.artifacts import Store, write_json
from pipeline.cli import EXIT_NOTHING_PASSED
from pipeline.recipe.load import load_recipe
from pipeline.recipe.schema import Recipe
from pipeline.settings import REPO_ROOT, Settings
from pipeline.toolenv import TRANSFORMERS, tool_env

QUANTGATE = Path(sys.executable).parent / "quantgate"
RECIPES = Path(__file__).resolve().parent / "recipes"
PARTS = ("cli", "rerun", "by_hand", "decode", "decision")
DECODED = {"llama.cpp": "Q4_K_M", "vllm": "bf16 reference"}  # what the decode part serves on each engine


@dataclass(frozen=True)
class PipelineRun:
    seconds: float
    report: dict[str, Any]  # the run's report JSON (artifacts/reports/<run>.json)


def quantgate_run(recipe: Path, artifacts: Path, log: Path, *flags: str) -> PipelineRun:
    """`quantgate run` into its own artifacts folder, timed from start to exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QUANTGATE_ARTIFACTS": str(artifacts), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    env.pop("QUANTGATE_TRACKING_URI", None)
    before = set((artifacts / "reports").glob("*.json"))
    started = time.monotonic()
    with open(log, "ab") as out:
        done = subprocess.run([str(QUANTGATE), "run", str(recipe), *flags], cwd=REPO_ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    seconds = round(time.monotonic() - started, 2)
    if done.returncode not in (0, EXIT_NOTHING_PASSED):  # either way, it measured what it set out to
        raise SystemExit(f"quantgate run {recipe} exited {done.returncode}: see {log}")
    # a run with nothing changed writes no report: the last one stands
    reports = sorted(set((artifacts / "reports").glob("*.json")) - before or before, key=lambda p: p.stat().st_mtime)
    print(f"  quantgate run {recipe.name}: {seconds} s", flush=True)
    return PipelineRun(seconds, json.loads(reports[-1].read_text()))


def derived_recipe(source: Path, out: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a recipe with `edit` applied, written elsewhere: task paths made absolute first, so
    they still name the same folders."""
    data = yaml.safe_load(source.read_text())
    for task in data.get("evals", {}).get("tasks", []):
        if isinstance(task, dict) and task.get("path"):
            task["path"] = str((source.parent / task["path"]).resolve())
    edit(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    """Per variant: promoted, pass, fail or skipped (priced only)."""
    return {row["variant"]: "promoted" if row["promoted"] else "pass" if row["passed"]
            else "skipped" if row.get("skipped") else "fail" for row in report["rows"]}


def same_decision(exhaustive: dict[str, Any], fast: dict[str, Any]) -> tuple[bool, list[str]]:
    """The same winner and tie, and the same verdict for every variant the fast run evaluated (a
    variant it left out must have failed or lost in the exhaustive run)."""
    differences = []
    if exhaustive["winner"] != fast["winner"] or sorted(exhaustive["tied"]) != sorted(fast["tied"]):
        differences.append(f"winner {exhaustive['winner']} tied {exhaustive['tied']} exhaustively,"
                           f" {fast['winner']} tied {fast['tied']} fast")
    full, quick = verdicts(exhaustive), verdicts(fast)
    for name, verdict in quick.items():
        if verdict == "skipped" and full[name] in ("promoted", "pass") and name in exhaustive["tied"]:
            differences.append(f"{name}: left out, but tied with the winner exhaustively")
        elif verdict != "skipped" and verdict != full[name]:
            differences.append(f"{name}: {full[name]} exhaustively, {verdict} fast")
    return not differences, differences


def items_scored(report: dict[str, Any]) -> int:
    return sum(n for row in report["rows"] for n in row.get("items", {}).values())


# ---- parts ----------------------------------------------------------------------------------------

def part_cli(work: Path, repeats: int = 5) -> dict[str, Any]:
    """Wall seconds of each command, from a new process; validate once first (its task lookups are
    cached in the engine environment after the first)."""
    def timed(argv: list[str]) -> float:
        started = time.monotonic()
        subprocess.run(argv, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.monotonic() - started

    out = {}
    demo = str(REPO_ROOT / "recipes" / "demo.yaml")
    out["validate_first_s"] = round(timed([str(QUANTGATE), "validate", demo]), 2)
    for name, argv in (("help", [str(QUANTGATE), "--help"]), ("validate", [str(QUANTGATE), "validate", demo])):
        runs = [timed(argv) for _ in range(repeats)]
        out[name] = {"median_s": round(statistics.median(runs), 3), "max_s": round(max(runs), 3), "runs": repeats}
    return out


def part_rerun(work: Path) -> dict[str, Any]:
    """From an empty store: R1 (F16, Q8_0); R1 again (nothing changed: nothing to do); R2 = R1 +
    Q4_K_M; R2 again with `--force record` (what deciding and recording the three costs, nothing
    measured). From another empty store: R2. The added variant's cost alone is R2 − R1 from empty
    stores; adding it to a warm store should cost about that plus deciding and recording."""
    base = RECIPES / "rerun.yaml"
    added = derived_recipe(base, work / "rerun-added.yaml",
                           lambda d: d["variants"].append({"name": "q4_k_m", "kind": "gguf", "type": "Q4_K_M"}))
    warm, cold = fresh(work / "rerun-store"), fresh(work / "rerun-store-cold")
    first = quantgate_run(base, warm, work / "rerun.log")
    again = quantgate_run(base, warm, work / "rerun.log")
    with_added = quantgate_run(added, warm, work / "rerun.log")
    recorded = quantgate_run(added, warm, work / "rerun.log", "--force", "record")
    from_empty = quantgate_run(added, cold, work / "rerun.log")
    alone = from_empty.seconds - first.seconds
    return {
        "first_s": first.seconds, "no_change_s": again.seconds, "added_variant_s": with_added.seconds,
        "record_only_s": recorded.seconds, "both_from_empty_s": from_empty.seconds,
        "added_variant_alone_s": round(alone, 1),
        "added_ratio": round((with_added.seconds - recorded.seconds) / alone, 3) if alone > 0 else None,
        "same_verdicts_warm_and_cold": verdicts(with_added.report) == verdicts(from_empty.report),
    }


def source_model(settings: Settings, recipe: Recipe) -> Path:
    """The recipe's dequantized model, made (or found) in the main store."""
    from pipeline import source

    return source.run(recipe.model, Store(settings.artifacts), tool_env(TRANSFORMERS, settings.envs),
                      recipe.timeouts.source).model_dir


def part_by_hand(work: Path) -> dict[str, Any]:
    from benchmarks import by_hand
    from pipeline.quantize.calibration import calibration_data
    from pipeline.workers.calibration import calibration_texts

    settings = Settings()
    recipe_path = RECIPES / "by_hand.yaml"
    recipe = load_recipe(recipe_path)
    model_dir = source_model(settings, recipe)  # both start from it: copied into the pipeline's empty store
    store = fresh(work / "by-hand-store")
    shutil.copytree(model_dir, store / "models" / model_dir.name)
    pipeline = quantgate_run(recipe_path, store, work / "by-hand-pipeline.log")
    texts = calibration_texts(calibration_data(recipe.calibration))
    hand = by_hand.run(settings, recipe, model_dir, texts, fresh(work / "by-hand"))
    return {
        "recipe": str(recipe_path.relative_to(REPO_ROOT)), "pipeline_s": pipeline.seconds, "by_hand_s": hand.seconds,
        "ratio": round(pipeline.seconds / hand.seconds, 3), "by_hand_steps": dict(hand.steps),
        "pipeline_items_scored": items_scored(pipeline.report), "pipeline_verdicts": verdicts(pipeline.report),
    }


def part_decode(work: Path) -> dict[str, Any]:
    """On the Q4_K_M GGUF the rerun part made and the demo model's HF reference."""
    from benchmarks import decode_bound

    settings = Settings()
    model_dir = source_model(settings, load_recipe(RECIPES / "rerun.yaml"))
    ggufs = [p for p in (work / "rerun-store" / "variants").glob("*/model.gguf")
             if json.loads((p.parent / "result.json").read_text())["quantization"] == {"kind": "gguf", "type": "Q4_K_M"}]
    if not ggufs:
        raise SystemExit("the decode part reads the Q4_K_M the rerun part makes: run --parts rerun first")
    return decode_bound.measure(settings, ggufs[0], model_dir, fresh(work / "decode"))


def part_decision(work: Path, recipe_path: Path, engines: list[str] | None) -> dict[str, Any]:
    kept = {v.name for v in load_recipe(recipe_path).variants if not engines or v.engine in engines}

    def keep_engines(data: dict[str, Any]) -> None:
        data["variants"] = [v for v in data["variants"] if v["name"] in kept]

    def exhaustive(data: dict[str, Any]) -> None:
        keep_engines(data)
        data.setdefault("promotion", {})["search"] = "exhaustive"
        data.setdefault("evals", {}).pop("sequential", None)

    def fast(data: dict[str, Any]) -> None:
        keep_engines(data)
        data.setdefault("promotion", {})["search"] = "cheapest_first"
        data["evals"].setdefault("sequential", {})

    full = quantgate_run(derived_recipe(recipe_path, work / "decision-exhaustive.yaml", exhaustive),
                         fresh(work / "decision-exhaustive"), work / "decision.log")
    quick = quantgate_run(derived_recipe(recipe_path, work / "decision-fast.yaml", fast),
                          fresh(work / "decision-fast"), work / "decision.log")
    same, differences = same_decision(full.report, quick.report)
    return {"recipe": str(recipe_path), "engines": engines or "all", "exhaustive_s": full.seconds,
            "fast_s": quick.seconds, "ratio": round(quick.seconds / full.seconds, 3), "same_decision": same,
            "differences": differences, "exhaustive_items": items_scored(full.report),
            "fast_items": items_scored(quick.report), "exhaustive_verdicts": verdicts(full.report),
            "fast_verdicts": verdicts(quick.report)}


# ---- the table ------------------------------------------------------------------------------------

def table(results: dict[str, Any]) -> str:
    """One row a figure: what, measured, target, met."""
    parts = results.get("parts", {})
    rows: list[tuple[str, str, str, str]] = []

    def met(ok: bool | None) -> str:
        return "—" if ok is None else "yes" if ok else "**no**"

    if by_hand := parts.get("by_hand"):
        rows.append(("1. pipeline vs the same tools by hand (vLLM leg)",
                     f"{by_hand['ratio']:.2f}× ({by_hand['pipeline_s']:.0f} s vs {by_hand['by_hand_s']:.0f} s)",
                     "≤ 0.6×", met(by_hand["ratio"] <= 0.6)))
    if decision := parts.get("decision"):
        engines = decision["engines"] if isinstance(decision["engines"], str) else ", ".join(decision["engines"])
        rows.append((f"2. time to decision, cheapest-first + sequential (demo, engines: {engines})",
                     f"{decision['fast_s'] / 60:.1f} min ({decision['ratio']:.2f}× exhaustive's"
                     f" {decision['exhaustive_s'] / 60:.1f}; {decision['fast_items']:,} of"
                     f" {decision['exhaustive_items']:,} items); same decision:"
                     f" {'yes' if decision['same_decision'] else 'no'}",
                     "≤ 25 min, same verdicts", met(decision["fast_s"] <= 25 * 60 and decision["same_decision"])))
    if rerun := parts.get("rerun"):
        rows.append(("3a. re-run, nothing changed", f"{rerun['no_change_s']:.1f} s", "≤ 3 s",
                     met(rerun["no_change_s"] <= 3)))
        if rerun["added_ratio"] is not None:
            rows.append(("3b. one variant added, less deciding and recording / that variant alone",
                         f"{rerun['added_ratio']:.2f}× ({rerun['added_variant_s'] - rerun['record_only_s']:.0f} s"
                         f" vs {rerun['added_variant_alone_s']:.0f} s)", "≈ 1× (≤ 1.2×)",
                         met(rerun["added_ratio"] <= 1.2)))
    if decode := parts.get("decode"):
        for row in decode["rows"]:
            rows.append((f"4. batch-1 decode, {row['engine']} {DECODED.get(row['engine'], '')} / memory-bandwidth bound",
                         f"{row['ratio']:.2f}× ({row['measured_tokens_per_s']:.1f} vs"
                         f" {row['bound_tokens_per_s']:.1f} tok/s)", "reported", "—"))
    if cli := parts.get("cli"):
        for name in ("help", "validate"):
            rows.append((f"5. `quantgate {'--help' if name == 'help' else 'validate recipes/demo.yaml'}`",
                         f"{cli[name]['median_s']:.2f} s (max {cli[name]['max_s']:.2f})", "< 1 s",
                         met(cli[name]["max_s"] < 1)))
    lines = [f"Measured on {results['host']}.", "", "| figure | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    dates = ", ".join(f"{name} {part['measured_at']}" for name, part in parts.items())
    return "\n".join(lines + ["", f"When: {dates}.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results.json")
    parser.add_argument("--work", type=Path, default=Settings().artifacts / "benchmarks" / "suite")
    parser.add_argument("--decision-recipe", type=Path, default=REPO_ROOT / "recipes" / "demo.yaml")
    parser.add_argument("--decision-engines", default="", help="comma-separated engines to keep (default: all)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := sorted(set(parts) - set(PARTS)):
        raise SystemExit(f"--parts: unknown {', '.join(unknown)} (allowed: {', '.join(PARTS)})")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["host"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    results.setdefault("parts", {})
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "cli": lambda: part_cli(args.work),
        "rerun": lambda: part_rerun(args.work),
        "by_hand": lambda: part_by_hand(args.work),
        "decode": lambda: part_decode(args.work),
        "decision": lambda: part_decision(args.work, args.decision_recipe.resolve(),
                                          [e for e in args.decision_engines.split(",") if e]),
    }
    for name in parts:
        print(f"bench: {name}", flush=True)
        results["parts"][name] = {**runners[name](), "measured_at": time.strftime("%Y-%m-%d %H:%M")}
        write_json(args.out, results)  # each part kept as soon as it is measured
        args.out.with_suffix(".md").write_text(table(results))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
