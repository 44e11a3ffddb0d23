"""Bad input, fuzzed: whatever is in the file, load_recipe returns a Recipe or raises RecipeError
whose message starts with the file's path; never another exception (which the CLI would show as a
traceback, exit 1). Mutations of the demo recipe must also name the section they broke.

Reproducible: derandomized, no example database. lm-eval's task registry is replaced by one that
knows no task (a name that is no bundled set is an error), so no tool environment is needed or run.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.measure import tasks
from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError
from pipeline.recipe.schema import Recipe
from pipeline.workers.messages import TaskInfo
from tests.unit.demo import demo_recipe

# ~25 ms an example; the whole file in ~30 s on two cores. Exploring more: raise max_examples and
# set derandomize=False for a local run (3000 random examples each found nothing more).
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DEMO = demo_recipe()
RECIPE_KEYS = sorted(Recipe.model_fields)
# Keys of the demo at any depth: arbitrary documents built from them get past the top level.
DEMO_KEYS = sorted({k for k in yaml.safe_dump(DEMO).replace(":", " ").split() if k.isidentifier()})


def _no_registry(queries, engines, envs_root):
    return [TaskInfo(index=q.index, error=f"unknown task {q.task!r} (fuzz registry knows none)", kind="task",
                     spec="", include_path=None, cwd="", subtasks=[]) for q in queries]


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory(prefix="qg-fuzz-") as scratch:
        patch.setattr(tasks, "_lookup", _no_registry)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("QUANTGATE_ENVS", str(Path(scratch) / "no-envs"))
        tasks._infos.cache_clear()  # lookups cached by other tests must not answer here, nor ours there
        yield Path(scratch)
        tasks._infos.cache_clear()


def load_or_error(path: Path) -> str | None:
    """None when the recipe loads; the message when it raises RecipeError; anything else fails the test."""
    try:
        assert isinstance(load_recipe(path), Recipe)
    except RecipeError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:"), message
        assert message.strip() != f"{path}:", message
        return message
    return None


def write(folder: Path, content: str | bytes) -> Path:
    path = folder / "fuzzed.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


# --- (a) arbitrary YAML documents ---------------------------------------------------------------

TEXT = st.text(max_size=20) | st.sampled_from(["", "[/x]", "[bold]", "../..", "a/b", "stdlib:os", "stdlib:a..b",
                                               "\x00", "é", "😀", "Q8_0", "gguf", "hf", "llamacpp", "2024-02-30"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
           | st.floats() | TEXT)
KEYS = st.sampled_from(DEMO_KEYS) | st.text(max_size=10) | st.integers(-3, 3) | st.booleans() | st.none()


def documents(leaves: st.SearchStrategy[Any] = SCALARS) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                        max_leaves=25)


# Recipe-shaped: the top-level keys a recipe has, with anything under them.
RECIPE_SHAPED = st.dictionaries(st.sampled_from(RECIPE_KEYS), documents(), min_size=1, max_size=len(RECIPE_KEYS))


@FUZZ
@given(doc=documents() | RECIPE_SHAPED)
def test_any_yaml_document_loads_or_fails_naming_the_file(offline, doc):
    path = write(offline, yaml.safe_dump(doc, allow_unicode=True))
    load_or_error(path)


# --- (b) mutations of the demo recipe -------------------------------------------------------------

Where = tuple[Any, ...]


def walk(node: Any, where: Where = ()) -> Iterator[tuple[Where, Any]]:
    yield where, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from walk(value, (*where, key))


def parent_of(doc: Any, where: Where) -> Any:
    for key in where[:-1]:
        doc = doc[key]
    return doc


OTHER_VALUES = SCALARS | st.lists(SCALARS, max_size=3) | st.dictionaries(st.text(max_size=8), SCALARS, max_size=3)
ODD_TEXT = st.text() | st.sampled_from(["[/x]", "[bold red]x[/]", "[a-z0-9]", "../../etc/passwd", "a/b", "\x00",
                                        "x" * 300, "é€😀", "\u202e", "stdlib:this", "%s{}", "- a\n- b"])


@st.composite
def mutated_demo(draw: st.DrawFn) -> tuple[dict[str, Any], Where, str]:
    doc = copy.deepcopy(DEMO)
    nodes = list(walk(doc))[1:]
    kind = draw(st.sampled_from(["delete", "retype", "insert", "restring"]))
    if kind == "delete":
        where, _ = draw(st.sampled_from(nodes))
        del parent_of(doc, where)[where[-1]]
    elif kind == "retype":
        where, old = draw(st.sampled_from([(w, v) for w, v in nodes if not isinstance(v, (dict, list))]))
        parent_of(doc, where)[where[-1]] = draw(OTHER_VALUES.filter(lambda v: type(v) is not type(old)))
    elif kind == "insert":
        where, mapping = draw(st.sampled_from([(w, v) for w, v in [((), doc), *nodes] if isinstance(v, dict)]))
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in mapping))
        mapping[key] = draw(SCALARS)
        where = (*where, key)
    else:
        where, _ = draw(st.sampled_from([(w, v) for w, v in nodes if isinstance(v, str)]))
        parent_of(doc, where)[where[-1]] = draw(ODD_TEXT)
    return doc, where, kind


def test_the_demo_recipe_loads_unmutated(offline):
    assert load_or_error(write(offline, yaml.safe_dump(DEMO, sort_keys=False))) is None


@FUZZ
@given(mutation=mutated_demo())
def test_a_mutated_demo_fails_naming_file_and_section(offline, mutation):
    doc, where, kind = mutation
    path = write(offline, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    message = load_or_error(path)
    if message is not None:
        section = str(where[0])
        # the section's name as it is printed: a fragment starts a line or follows a field's dot
        assert section in message[len(str(path)):], f"{kind} at {where}: {section!r} not named in {message}"


# --- (c) raw bytes and text -----------------------------------------------------------------------

YAML_TOKENS = [*":-[]{},#&*!|>'\"%@`? \n\t\\", "a", "0", "1.5", "é", "\x00", "\ufeff", "name", "variants", "!!int ",
               "!!timestamp ", "!!binary ", "<<", "*a", "&a ", "2024-02-30", ".inf", "~", "---", "..."]
YAMLISH = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join)


@FUZZ
@given(content=st.binary(max_size=200) | st.text(max_size=200) | YAMLISH)
def test_any_file_content_loads_or_fails_naming_the_file(offline, content):
    load_or_error(write(offline, content))


@FUZZ
@given(prefix=st.binary(max_size=40), cut=st.integers(0, 2000))
def test_a_damaged_demo_file_fails_naming_the_file(offline, prefix, cut):
    """The demo's text cut short, or with bytes in front: YAML errors, half a recipe, bad encodings."""
    text = yaml.safe_dump(DEMO, sort_keys=False).encode()
    load_or_error(write(offline, prefix + text[:cut]))
