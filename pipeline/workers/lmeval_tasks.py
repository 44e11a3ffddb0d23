"""Look task references up in lm-eval's own index (runs in an engine env, which has lm-eval).

Reads task configs only, downloads nothing: for each reference, whether it is a task, a group or a
tag, its member tasks, and for each member the output type, the metrics and filters its config
declares, and whether its data can be read offline (local files, or the datasets cache).
"""

from __future__ import annotations

import difflib
import glob
import os
from pathlib import Path
from typing import Any

from pipeline.workers.handoff import serve
from pipeline.workers.messages import SubtaskInfo, TaskInfo, TaskLookup, TaskLookupRequest, TaskQuery


def data_availability(cfg: dict[str, Any], cwd: str) -> tuple[str, str, list[str]]:
    """(local | cached | missing | needs-hub | custom, detail, local data files) for a task config, offline."""
    from datasets import config as datasets_config
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if cfg.get("custom_dataset"):
        return "custom", "a custom_dataset function: its data cannot be checked before it runs", []
    path = cfg.get("dataset_path")
    if not path:
        return "custom", "no dataset_path", []
    kwargs = cfg.get("dataset_kwargs") or {}
    if path in _PACKAGED_DATASETS_MODULES:  # json, csv, parquet, arrow, text, ...: files on disk
        files = kwargs.get("data_files")
        listed = list(files.values()) if isinstance(files, dict) else ([files] if isinstance(files, str) else files or [])
        flat = [f for item in listed for f in (item if isinstance(item, list) else [item])]
        found = [p for f in flat for p in glob.glob(os.path.join(cwd, os.path.expanduser(f)))]
        missing = [f for f in flat if "://" in f or not glob.glob(os.path.join(cwd, os.path.expanduser(f)))]
        if flat and not missing:
            return "local", ", ".join(flat), sorted(found)
        if any("://" in f for f in missing):
            return "needs-hub", f"data files on the network: {', '.join(missing)}", []
        return "missing", f"data files not found: {', '.join(missing) or 'none given'} (relative to {cwd})", []
    if os.path.isdir(os.path.join(cwd, path)):
        return "local", path, []
    # mirrors datasets' CachedDatasetModuleFactory: what load_dataset finds offline
    parts = path.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = Path(os.path.expanduser(str(datasets_config.HF_DATASETS_CACHE))) / "___".join(parts)
    hits = [p for p in glob.glob(str(root / (cfg.get("dataset_name") or "default") / "*" / "*")) if os.path.isdir(p)]
    if hits:
        return "cached", hits[0], []
    return "needs-hub", f"{path} is on the Hugging Face hub and not in the datasets cache ({root})", []


def subtask(name: str, cfg: dict[str, Any], yaml_path: Path | None, cwd: str) -> SubtaskInfo:
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY

    output_type = cfg.get("output_type", "generate_until")
    metrics = [m["metric"] for m in cfg.get("metric_list") or [] if isinstance(m.get("metric"), str)]
    filters = [f["name"] for f in cfg.get("filter_list") or []] or ["none"]
    data, detail, data_files = data_availability(cfg, cwd)
    config_files = [str(yaml_path)] if yaml_path else []
    if yaml_path:
        config_files += sorted(str(p) for p in yaml_path.parent.glob("*.py"))
    return SubtaskInfo(name=name, output_type=output_type, metrics=metrics or list(DEFAULT_METRIC_REGISTRY.get(output_type, [])),
                       filters=filters, data=data, data_detail=detail, files=config_files + data_files)


class UnsupportedTask(Exception):
    """A task config lm-eval indexes but cannot build."""


def _members(manager: Any, name: str, cwd: str, seen: set[str]) -> list[SubtaskInfo]:
    """The tasks a name stands for: itself, or a group's or tag's members (recursively)."""
    from lm_eval.tasks._index import Kind

    if name in seen:
        return []
    seen.add(name)
    entry = manager.task_index[name]
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [subtask(name, entry.cfg or {}, entry.yaml_path, cwd)]
    members = sorted(entry.tags) if entry.kind == Kind.TAG else (entry.cfg or {}).get("task", [])
    out = []
    for member in members if isinstance(members, list) else [members]:
        if isinstance(member, dict) and member.get("task") in manager.task_index:
            out += _members(manager, member["task"], cwd, seen)  # a registered task with overrides
        elif isinstance(member, dict):  # an inline task config inside the group
            if "include" in member:  # lm-eval builds an inline member from its own keys only
                raise UnsupportedTask(
                    f"{entry.yaml_path}: group {name}'s inline task {member.get('task')!r} uses include:, which"
                    " lm-eval does not resolve inside a group; give it its own YAML (include works there) and"
                    " list its name in the group")
            # lm-eval names an inline member after its group
            out.append(subtask(f"{name}::{member.get('task', '?')}", member, entry.yaml_path, cwd))
        elif member in manager.task_index:
            out += _members(manager, member, cwd, seen)
    return out


def _find(manager: Any, query: TaskQuery) -> TaskInfo:
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    cwd = ""
    name = query.task
    if query.path:
        path = Path(query.path)
        cwd = str(path if path.is_dir() else path.parent)
        if path.is_file():
            try:
                cfg = load_yaml(path, resolve_func=False)
            except Exception as exc:  # a user's YAML that lm-eval cannot read: say why
                return TaskInfo(index=query.index, error=f"{path}: not a task YAML lm-eval can read ({exc})",
                                kind="task", spec="", include_path=None, cwd=cwd, subtasks=[])
            declared = cfg.get("task") if isinstance(cfg.get("task"), str) else cfg.get("group")
            if name and declared != name:
                return TaskInfo(index=query.index, error=f"{path} declares task {declared!r}, not {name!r}",
                                kind="task", spec="", include_path=None, cwd=cwd, subtasks=[])
            name = declared
    entry = manager.task_index.get(name)
    if entry is None:
        where = f"in {query.path}" if query.path else "in lm-eval's task registry"
        return TaskInfo(index=query.index, error=f"unknown task {name!r} {where}", kind="task", spec="",
                        include_path=None, cwd=cwd, subtasks=[],
                        close=difflib.get_close_matches(str(name), manager.all_tasks, n=3, cutoff=0.6))
    kind = {Kind.GROUP: "group", Kind.TAG: "tag"}.get(entry.kind, "task")
    try:
        members = _members(manager, name, cwd or os.getcwd(), set())
    except UnsupportedTask as exc:
        return TaskInfo(index=query.index, error=str(exc), kind=kind, spec="", include_path=None, cwd=cwd,
                        subtasks=[])
    return TaskInfo(index=query.index, error=None, kind=kind, spec=name, include_path=cwd or None,
                    cwd=cwd or os.getcwd(), subtasks=members)


def lookup(request: TaskLookupRequest) -> TaskLookup:
    from lm_eval.tasks import TaskManager

    folders = sorted({str(Path(q.path) if Path(q.path).is_dir() else Path(q.path).parent)
                      for q in request.queries if q.path})
    manager = TaskManager(include_path=folders or None, include_defaults=request.registry)
    return TaskLookup(tasks=[_find(manager, q) for q in request.queries])


if __name__ == "__main__":
    serve(lookup)
