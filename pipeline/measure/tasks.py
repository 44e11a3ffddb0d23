"""Eval task references resolved before any work: a bundled set, an lm-eval registry task or group,
or a task YAML (or folder) by path, each with the per-item metric and filter the gate reads.

Bundled sets are read here; registry and path tasks are looked up in lm-eval's own index by a
worker in an engine env (lm-eval lives there; its config is read, nothing is downloaded). A task
that is unknown (with the closest names), needs the hub while offline, lacks the metric or filter
asked for, or asks for a chat template the model does not have is refused naming its field.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from pipeline import specs
from pipeline.artifacts import content_key, sha256_file, write_json
from pipeline.recipe.schema import EvalsConfig, TaskRef
from pipeline.settings import REPO_ROOT
from pipeline.toolenv import ToolEnv, ToolEnvMissing, tool_env
from pipeline.workers.handoff import from_plain, to_plain
from pipeline.workers.messages import EvalTask, SubtaskInfo, TaskInfo, TaskLookupRequest, TaskQuery

EVALSETS_DIR = REPO_ROOT / "evalsets"
LOGLIKELIHOOD_TYPES = ("multiple_choice", "loglikelihood")
SUPPORTED_TYPES = LOGLIKELIHOOD_TYPES + ("generate_until",)


LOOKUP_TIMEOUT_S = 600  # reading task configs; indexing lm-eval's registry takes ~20 s


class TaskErrors(Exception):
    """Task references that cannot run: (field, message) pairs, reported together."""

    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


@dataclass(frozen=True, kw_only=True)
class ResolvedTask:
    ref: TaskRef
    source: str  # bundled | registry | path
    info: TaskInfo
    metric: str
    filter: str

    @property
    def label(self) -> str:
        return self.ref.label

    @property
    def output_type(self) -> str:
        return self.info.subtasks[0].output_type

    @property
    def pooled(self) -> bool:
        return self.info.kind != "task" and self.ref.gate == "aggregate"

    def gated_labels(self) -> list[str]:
        """What the gate judges: the task, a group pooled, or each member of a group."""
        if self.info.kind == "task" or self.pooled:
            return [self.label]
        return [f"{self.label}/{s.name}" for s in self.info.subtasks]

    def eval_task(self, default_limit: int | None) -> EvalTask:
        return EvalTask(label=self.label, spec=self.info.spec, include_path=self.info.include_path, cwd=self.info.cwd,
                        subtasks=[s.name for s in self.info.subtasks], metric=self.metric, filter=self.filter,
                        num_fewshot=self.ref.num_fewshot, limit=self.ref.limit or default_limit,
                        gen_kwargs=self.ref.gen_kwargs, apply_chat_template=self.ref.apply_chat_template,
                        pooled=self.pooled or self.info.kind == "task")

    def fingerprint(self) -> str:
        """Hash of what decides its items: the config and local data files, the hub cache entry."""
        digest = hashlib.sha256()
        for sub in self.info.subtasks:
            digest.update(f"{sub.name}\0{sub.data}\0{sub.data_detail}".encode())
            for file in sub.files:
                digest.update(_file_hash(file).encode())
        return digest.hexdigest()[:16]


def _file_hash(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        return "missing"
    stat = file.stat()
    return _hash_of(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _hash_of(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, computed once per version of it (benchmark data files can be large)."""
    return sha256_file(Path(path))


def available_evalsets() -> list[str]:
    if not EVALSETS_DIR.is_dir():
        return []
    return sorted(p.name for p in EVALSETS_DIR.iterdir() if (p / f"{p.name}.yaml").is_file())


def bundled(name: str) -> TaskInfo:
    """A set under evalsets/: its YAML read here (its data_files are relative to the repository)."""
    folder = EVALSETS_DIR / name
    config = yaml.safe_load((folder / f"{name}.yaml").read_text())
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix in (".yaml", ".jsonl", ".json"))
    sub = SubtaskInfo(name=config["task"], output_type=config.get("output_type", "generate_until"),
                      metrics=[m["metric"] for m in config.get("metric_list", [])],
                      filters=[f["name"] for f in config.get("filter_list", [])] or ["none"],
                      data="local", data_detail=f"evalsets/{name}", files=files)
    return TaskInfo(index=-1, error=None, kind="task", spec=config["task"], include_path=str(folder),
                    cwd=str(REPO_ROOT), subtasks=[sub])


def resolve(config: EvalsConfig, engines: list[str], envs_root: Path,
            chat_template: bool | None = None) -> list[ResolvedTask]:
    """Every task reference resolved and checked; raises TaskErrors naming each bad field.

    Args:
        engines: the engines the recipe uses (one of their envs, which hold lm-eval, looks tasks up).
        chat_template: whether the model has a chat template (None: not known before it is downloaded).
    """
    evalsets = available_evalsets()
    infos = _infos(config.model_dump_json(), tuple(engines), envs_root)
    errors: list[tuple[str, str]] = []
    resolved = []
    for i, (ref, info) in enumerate(zip(config.tasks, infos)):
        where = f"evals.tasks[{i}]"
        if info.error:
            close = difflib.get_close_matches(str(ref.task), evalsets, n=2) + info.close if ref.path is None else info.close
            hint = f" Did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
            known = f" (bundled sets: {', '.join(evalsets)}; or any lm-eval task or group)" if ref.path is None else ""
            errors.append((f"{where}.{'task' if ref.task else 'path'}", f"{info.error}.{hint}{known}"))
            continue
        chosen = _check(ref, info, where, chat_template, errors)
        if chosen is not None:
            resolved.append(ResolvedTask(ref=ref, source=_source(ref, evalsets), info=info, metric=chosen[0],
                                         filter=chosen[1]))
    if errors:
        raise TaskErrors(errors)
    return resolved


@functools.lru_cache(maxsize=16)
def _infos(config_json: str, engines: tuple[str, ...], envs_root: Path) -> tuple[TaskInfo, ...]:
    """Each reference looked up once per process (lm-eval's registry index takes ~20 s to build)."""
    config = EvalsConfig.model_validate_json(config_json)
    evalsets = available_evalsets()
    infos: dict[int, TaskInfo] = {}
    queries = []
    for i, ref in enumerate(config.tasks):
        if ref.path is None and ref.task in evalsets:
            infos[i] = bundled(ref.task)
        else:
            queries.append(TaskQuery(index=i, task=ref.task, path=str(ref.path) if ref.path else None))
    if queries:
        for info in _lookup(queries, engines, envs_root):
            infos[info.index] = info
    return tuple(infos[i] for i in range(len(config.tasks)))


def _source(ref: TaskRef, evalsets: list[str]) -> str:
    if ref.path is not None:
        return "path"
    return "bundled" if ref.task in evalsets else "registry"


def _check(ref: TaskRef, info: TaskInfo, where: str, chat_template: bool | None,
           errors: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(metric, filter) the gate reads, or None with the reasons appended to `errors`."""
    before = len(errors)
    if not info.subtasks:
        errors.append((where, f"{info.spec!r} is a {info.kind} with no tasks in it"))
        return None
    types = sorted({s.output_type for s in info.subtasks})
    if len(types) > 1:
        errors.append((where, f"{info.spec} mixes output types ({', '.join(types)}): one metric cannot gate them"
                              " together; name its members as separate tasks"))
        return None
    if types[0] not in SUPPORTED_TYPES:
        errors.append((where, f"{info.spec}: output type {'/'.join(types)} is not supported"
                              f" (supported: {', '.join(SUPPORTED_TYPES)})"))
        return None
    default = "acc" if types[0] in LOGLIKELIHOOD_TYPES else "exact_match"
    metric = ref.metric or default
    for sub in info.subtasks:
        if metric not in sub.metrics:
            field = f"{where}.metric" if ref.metric else where
            errors.append((field, f"{sub.name} produces {', '.join(sub.metrics) or 'no metric'}; {metric!r} is not"
                                  " one of them" + ("" if ref.metric else " (name one with `metric`)")))
            break
    filters = info.subtasks[0].filters
    chosen = ref.filter or filters[0]
    for sub in info.subtasks:
        if chosen not in sub.filters:
            errors.append((f"{where}.filter", f"{sub.name} has the filters {', '.join(sub.filters)};"
                                              f" {chosen!r} is not one of them"))
            break
    for sub in info.subtasks:
        if sub.data == "missing":
            errors.append((where, f"{sub.name}: {sub.data_detail}; a task's data_files are relative to its own"
                                  " folder (the demo's public benchmark data comes with `make setup`)"))
            break
        if sub.data == "needs-hub":
            errors.append((where, f"{sub.name} needs the Hugging Face hub, which this run cannot reach"
                                  f" (HF_DATASETS_OFFLINE): {sub.data_detail}; point a task YAML at local data"
                                  " files (`path`), or fetch the dataset once where there is a network"))
            break
    if ref.apply_chat_template and chat_template is False:
        errors.append((f"{where}.apply_chat_template", "the model has no chat template (its tokenizer config"
                                                       " holds none): run the task without it"))
    if ref.gen_kwargs and types[0] != "generate_until":
        errors.append((f"{where}.gen_kwargs", f"{info.spec} is a {types[0]} task: it generates nothing"))
    return (metric, chosen) if len(errors) == before else None


def _lookup(queries: list[TaskQuery], engines: tuple[str, ...], envs_root: Path) -> list[TaskInfo]:
    """Ask lm-eval (in the first engine env that is set up) for these references; a task by path
    whose files have not changed since is answered from that env's lookup cache."""
    for engine in engines:
        env = tool_env(specs.engine(engine).env, envs_root)
        if env.python.is_file() and env.version("lm_eval"):
            found = {q.index: info for q in queries if (info := _cached_lookup(env, q)) is not None}
            todo = [q for q in queries if q.index not in found]
            if todo:
                registry = any(q.path is None for q in todo)  # indexing the registry costs ~20 s
                with tempfile.TemporaryDirectory(prefix="quantgate-tasks-") as scratch:
                    for info in env.run_worker("pipeline.workers.lmeval_tasks",
                                               TaskLookupRequest(queries=todo, registry=registry), Path(scratch),
                                               "lmeval_tasks.log", timeout_s=LOOKUP_TIMEOUT_S).tasks:
                        found[info.index] = info
                        _remember_lookup(env, next(q for q in todo if q.index == info.index), info)
            return [found[q.index] for q in queries]
    raise ToolEnvMissing("looking lm-eval tasks up needs lm-eval from an engine environment"
                         f" ({', '.join(specs.engine(e).env for e in engines)}): run `make setup`")


# --- the lookup cache: `quantgate validate` in well under a second once a task has been looked up ---
LOOKUP_CACHE = "task-lookups"  # in the engine env that looked the task up (a new env starts empty)
MAX_TREE_FILES = 2000  # a task folder bigger than this is looked up every time (its listing is the key)


def _lookup_key(env: ToolEnv, query: TaskQuery) -> str | None:
    """What decides a task-by-path lookup: lm-eval's version and the folder's files (names, sizes,
    times); None for a registry name (whether its data is in the hub cache can change)."""
    if query.path is None:
        return None
    path = Path(query.path)
    folder = path if path.is_dir() else path.parent
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files or len(files) > MAX_TREE_FILES:
        return None
    tree = [(str(p.relative_to(folder)), *_stamp(p)) for p in files]
    return content_key("task-lookup", env.version("lm_eval"), query.task, str(path.resolve()), tree)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _cached_lookup(env: ToolEnv, query: TaskQuery) -> TaskInfo | None:
    key = _lookup_key(env, query)
    entry = env.root / LOOKUP_CACHE / f"{key}.json"
    if key is None or not entry.is_file():
        return None
    try:
        saved = json.loads(entry.read_text())
        if any(not Path(f).is_file() or list(_stamp(Path(f))) != stamp for f, stamp in saved["files"].items()):
            return None  # a file it reads outside its folder changed
        return replace(from_plain(saved["info"], TaskInfo), index=query.index)
    except (OSError, ValueError, KeyError, TypeError):  # HandoffError is a ValueError
        return None  # an unreadable entry is looked up again


def _remember_lookup(env: ToolEnv, query: TaskQuery, info: TaskInfo) -> None:
    """Kept only for a task that was found and reads local files alone (nothing that can appear later)."""
    key = _lookup_key(env, query)
    if key is None or info.error is not None or not all(sub.data == "local" for sub in info.subtasks):
        return
    files = sorted({f for sub in info.subtasks for f in sub.files if Path(f).is_file()})
    write_json(env.root / LOOKUP_CACHE / f"{key}.json",
               {"info": to_plain(info), "files": {f: list(_stamp(Path(f))) for f in files}})

