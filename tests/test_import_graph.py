"""The package's import graph and import side effects (issue 31): no import cycles between mm_st's modules,
importing mm_st or a helper does not import mteb, and a benchmark is one module found by scanning
mm_st/evaluation/benchmarks/ (the "Add a benchmark" guide of docs/architecture.md, followed with a toy benchmark)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mteb
import pytest

from mm_st.evaluation import benchmarks, registry
from mm_st.evaluation.data import DataLayoutError
from mm_st.evaluation.tasks import MM_ST_TASK_NAMES
from tests.mmst_eval_data import OracleEncoder

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mm_st"

def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under mm_st/ (a package by its ``__init__.py``)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(name: str, source: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The mm_st modules ``name`` imports anywhere in its file (module level and inside functions): ``import a.b``
    gives ``a.b``; ``from a import b`` gives ``a.b`` when that is a module, else ``a``. The parent packages Python
    imports on the way are not counted (a package's ``__init__`` is not a dependency of its modules)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", modules)
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                out.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in sorted(component) for b in sorted(graph[a] & component)]
    return "{" + ", ".join(sorted(component)) + "}: " + "; ".join(edges)


def test_the_graph_reader_finds_a_cycle_through_function_local_and_relative_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == {frozenset({"a", "b", "c"})}
    modules = module_files()
    # a relative import, an aliased submodule and a function-local import are all edges
    source = textwrap.dedent("""
        from . import data as eval_data
        from ..io import is_local
        def later():
            from mm_st.evaluation.mbeir_files import PREFIX
            import mm_st.evaluation.tasks
    """)
    found = imported_modules("mm_st.evaluation.model", source, False, modules)
    assert found == {"mm_st.evaluation.data", "mm_st.io", "mm_st.evaluation.mbeir_files", "mm_st.evaluation.tasks"}


def test_mm_st_has_no_import_cycles():
    graph = import_graph()
    found = [describe(c, graph) for c in cycles(graph)]
    assert not found, "import cycles: " + " | ".join(found)


def test_importing_mm_st_and_its_helpers_does_not_import_mteb():
    helpers = ["mm_st", "mm_st.data", "mm_st.evaluation", "mm_st.evaluation.data", "mm_st.evaluation.instructions",
               "mm_st.evaluation.mbeir_files"]
    code = ("import importlib, json, sys\nout = {}\n"
            f"for name in {helpers!r}:\n"
            "    importlib.import_module(name)\n"
            "    out[name] = 'mteb' in sys.modules\n"
            "print(json.dumps(out))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[-1]) == dict.fromkeys(helpers, False)


def test_every_benchmark_module_is_found_and_registered():
    modules = {m.__name__.rsplit(".", 1)[-1]: m for m in registry.benchmark_modules()}
    assert sorted(modules) == ["cirr", "emoji_mbeir", "mbeir", "mbeir_global", "mbeir_local", "mmeb", "mmeb_v2",
                               "mmeb_v2_video", "mmeb_v2_visdoc", "xtd"]
    registry.register()
    mteb_benchmarks = registry._lookup("mteb.benchmarks.benchmarks")  # its first import adds mm_st's benchmarks
    for name, module in modules.items():
        for cls in module.TASKS:
            assert type(mteb.get_task(cls.metadata.name)) is cls
        if module.BENCHMARK is not None:
            registered = getattr(mteb_benchmarks, registry.registry_attribute(module))
            assert mteb.get_benchmark(registered.name) is registered
    assert len(modules["mmeb"].TASKS) == 36 and len(modules["mbeir_local"].TASKS) == 16
    assert len(modules["mmeb_v2"].TASKS) == 45 and modules["mmeb_v2_video"].TASKS == ()
    assert len(modules["emoji_mbeir"].TASKS) == 5 and len(modules["mbeir_global"].TASKS) == 21
    assert mteb.get_benchmark("MMEB") is mteb_benchmarks.MM_ST_MMEB


TOY = '''
"""A toy benchmark: two text queries, two documents, read from $MM_ST_TOY_DATA (a JSON file)."""

import json

from mteb.abstasks.task_metadata import TaskMetadata
from mteb.benchmarks.benchmark import Benchmark

from mm_st.evaluation.data import DataSource
from mm_st.evaluation.tasks import MMSTRetrievalTask, split_rows

DATA = DataSource("TOY", "MM_ST_TOY_DATA", None, "<data>: a JSON file of queries, corpus and relevant")


class ToyRetrieval(MMSTRetrievalTask):
    data_source = DATA
    metadata = TaskMetadata(
        name="MMST-Toy-Retrieval", description="Toy.", reference=None,
        dataset={"path": "mm_st/toy", "revision": "1"}, type="Retrieval", category="t2t", modalities=["text"],
        eval_splits=["test"], eval_langs=["eng-Latn"], main_score="recall_at_1", license="not specified",
        annotations_creators="derived", sample_creation="created", bibtex_citation="", prompt={"query": "Find it: "},
    )

    def build(self):
        with open(self.source(), encoding="utf-8") as handle:
            rows = json.load(handle)
        queries, corpus = rows["queries"], rows["corpus"]
        split = {"queries": split_rows(list(queries), list(queries.values()), [None] * len(queries)),
                 "corpus": split_rows(list(corpus), list(corpus.values()), [None] * len(corpus)),
                 "relevant_docs": {q: {d: 1} for q, d in rows["relevant"].items()}, "top_ranked": None}
        return {"default": {"test": split}}


def toy_benchmark():
    return Benchmark(name="MMST-Toy", tasks=[ToyRetrieval()], description="Toy benchmark.")


TASKS = (ToyRetrieval,)
BENCHMARK = toy_benchmark
'''


@pytest.fixture
def toy_benchmark_module(tmp_path, monkeypatch):
    """The toy module written into a folder added to the benchmarks package's path; mteb's registries are
    restored afterwards."""
    folder = tmp_path / "extra_benchmarks"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY, encoding="utf-8")
    (tmp_path / "toy.json").write_text(json.dumps({
        "queries": {"q0": "alpha", "q1": "beta"}, "corpus": {"d0": "ALPHA", "d1": "BETA"},
        "relevant": {"q0": "d0", "q1": "d1"}}), encoding="utf-8")
    monkeypatch.setenv("MM_ST_TOY_DATA", str(tmp_path / "toy.json"))
    monkeypatch.setattr(benchmarks, "__path__", [*benchmarks.__path__, str(folder)])
    monkeypatch.setitem(registry._state, "done", False)
    tasks = registry._lookup("mteb.get_tasks")
    task_list, names = tasks.TASK_LIST, set(MM_ST_TASK_NAMES)
    yield
    tasks._TASKS_REGISTRY.pop("MMST-Toy-Retrieval", None)
    tasks.TASK_LIST = task_list
    MM_ST_TASK_NAMES.intersection_update(names)
    if hasattr(sys.modules.get("mteb.benchmarks.benchmarks"), "MM_ST_TOY"):
        delattr(sys.modules["mteb.benchmarks.benchmarks"], "MM_ST_TOY")
    registry._lookup("mteb.benchmarks.get_benchmark._build_registry").cache_clear()
    registry._lookup("mteb.benchmarks.get_benchmark._build_aliases_registry").cache_clear()
    sys.modules.pop("mm_st.evaluation.benchmarks.toy", None)


def test_a_benchmark_is_one_module_found_by_the_scan_and_run_by_mteb(toy_benchmark_module):
    registry.register()
    toy = sys.modules["mm_st.evaluation.benchmarks.toy"]
    assert toy in registry.benchmark_modules()
    assert type(mteb.get_task("MMST-Toy-Retrieval")) is toy.ToyRetrieval
    bench = mteb.get_benchmark("MMST-Toy")
    assert bench is mteb.benchmarks.benchmarks.MM_ST_TOY and [t.metadata.name for t in bench.tasks] == ["MMST-Toy-Retrieval"]
    vectors = {"q0": [1.0, 0.0], "q1": [0.0, 1.0], "d0": [1.0, 0.1], "d1": [0.1, 1.0]}
    for reverse, expected in ((False, 1.0), (True, 0.0)):
        result = mteb.evaluate(OracleEncoder(2, reverse=reverse, vectors=vectors), list(bench.tasks), cache=None,
                               show_progress_bar=False)
        assert result.task_results[0].get_score() == expected
    # its data variable is read where the data are loaded, and an unset one is named with the layout
    toy.ToyRetrieval(data=None)  # creating a task reads nothing
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MM_ST_TOY_DATA")
        with pytest.raises(DataLayoutError, match=r"No TOY data configured: .* set \$MM_ST_TOY_DATA .*\n<data>: a JSON"):
            toy.ToyRetrieval().load_data()
