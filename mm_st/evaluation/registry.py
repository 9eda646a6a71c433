"""Make mteb see mm_st's tasks, benchmarks and models (mteb has no plugin entry point).

:func:`register` adds, at runtime and without touching mteb's files:

- the tasks to mteb's task registry (``mteb.get_task("MMEB-VOC2007")``, ``mteb run -t``);
- the ``MMEB``, ``MMEB-V2`` (``-video``, ``-visdoc``), ``XTD``, ``M-BEIR``, ``M-BEIR-local``, ``M-BEIR-global`` and
  ``MMST-Emoji-MBEIR`` benchmarks
  to its benchmark registry (``mteb run -b MMEB``), when mteb first imports its benchmark module
  ``mteb.benchmarks.benchmarks`` (the first ``mteb.get_benchmark(s)``; importing it builds every mteb benchmark, a
  second of CPU that ``import mteb`` and ``mteb.get_task`` do not pay); ``M-BEIR-global`` holds the union-pool tasks of
  the root ``$MM_ST_MBEIR_DATA`` names then, see :func:`mm_st.evaluation.benchmarks.mbeir_global_benchmark`;
- the paper-model entries (:func:`mm_st.evaluation.model.paper_models`) to its model registry;
- mm_st models by path or Hub id to ``mteb.get_model_meta`` / ``mteb.get_model``: a name that is
  not in mteb's registry and is a directory (or Hub repo) saved by mm_st resolves to
  :func:`mm_st.evaluation.model.mm_st_model_meta`; everything else goes to mteb unchanged.
- in the ``mteb`` command only: mm_st's own input errors (:class:`~mm_st.evaluation.data.DataLayoutError`,
  :class:`~mm_st.evaluation.model.UntrustedModelCode`), whose message says what is wrong and what is expected,
  end the command with that message as Python's last traceback line writes it, without the traceback
  (:func:`cli_excepthook`; ``MM_ST_TRACEBACK=1`` keeps the traceback). Other errors are printed as before.

The tasks and benchmarks are found by scanning :mod:`mm_st.evaluation.benchmarks` (one module per benchmark,
:func:`benchmark_modules`), as mteb finds its own.

With mm_st installed it runs whenever ``mteb`` is imported (the ``mm_st_mteb.pth`` start-up hook, see
:mod:`mm_st.evaluation._hook`), and where mm_st hands names to mteb (:func:`mm_st.evaluation.mbeir.evaluate_mbeir`,
the public names of :mod:`mm_st.evaluation` that are mteb objects); importing a helper such as
:mod:`mm_st.evaluation.data` registers nothing and does not import mteb. Registering twice is a no-op. Set
``MM_ST_MTEB_PLUGIN=0`` to keep the hook from registering.

This module is the one place that touches mteb's internals. :data:`MTEB_INTERNALS` lists each one
it (and CIRR's scoring) relies on; :func:`register` raises when the installed mteb no longer
matches one, and a contract test fails.

Example:
    >>> import mteb
    >>> from mm_st.evaluation.registry import register
    >>> register()
    >>> mteb.get_task("MMEB-VOC2007").metadata.main_score
    'precision_at_1'
    >>> mteb.get_benchmark("MMEB").name
    'MMEB'
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import pkgutil
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mteb

from mm_st.evaluation import benchmarks
from mm_st.evaluation.data import DataLayoutError
from mm_st.evaluation.model import UntrustedModelCode, mm_st_model_meta, paper_models
from mm_st.evaluation.tasks import is_mm_st_task  # noqa: F401  (its old home)

logger = logging.getLogger(__name__)

_state = {"done": False}


def _signature_is(*names: str) -> Callable[[Any], bool]:
    return lambda function: tuple(inspect.signature(function).parameters) == names


def _evaluate_subset_ok(method: Any) -> bool:
    parameters = inspect.signature(method).parameters
    keyword = {n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    return list(parameters)[:3] == ["self", "model", "data_split"] and {"hf_split", "hf_subset", "prediction_folder"} <= keyword


def _cached(function: Any) -> bool:
    return callable(getattr(function, "cache_clear", None))


BENCHMARKS_MODULE = "mteb.benchmarks.benchmarks"
GET_MODEL_META_PARAMETERS = ("model_name", "revision", "fetch_from_hf", "fill_missing", "experiment_kwargs")

# Every mteb internal mm_st relies on (mteb has no plugin API): what it must be, who uses it, and the
# check. register() refuses to run when one has changed, and tests/evaluation/test_evaluation.py::
# test_mteb_internals_contract fails (it never merely warns).
MTEB_INTERNALS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "mteb.get_tasks._TASKS_REGISTRY": ("a dict task name -> task class, read by mteb.get_task (tasks)",
                                       lambda o: isinstance(o, dict)),
    "mteb.get_tasks.TASK_LIST": ("a tuple of task classes, filtered by mteb.get_tasks (tasks)",
                                 lambda o: isinstance(o, tuple)),
    # checked by find_spec, not imported: importing it builds every mteb benchmark (BENCHMARKS_MODULE)
    BENCHMARKS_MODULE: ("the module whose Benchmark attributes are the benchmark registry, read by "
                        "mteb.benchmarks.get_benchmark's registry builders (benchmarks)",
                        lambda spec: spec is not None and spec.loader is not None),
    "mteb.benchmarks.get_benchmark._build_registry": ("an lru_cache'd registry builder (benchmarks)", _cached),
    "mteb.benchmarks.get_benchmark._build_aliases_registry": ("an lru_cache'd alias registry builder (benchmarks)",
                                                              _cached),
    "mteb.models.model_implementations.MODEL_REGISTRY": ("a dict model name -> ModelMeta (paper models)",
                                                         lambda o: isinstance(o, dict)),
    "mteb.models.get_model_meta.get_model_meta": (f"a function{GET_MODEL_META_PARAMETERS} that mteb.get_model calls "
                                                  "(mm_st models by path)", _signature_is(*GET_MODEL_META_PARAMETERS)),
    "mteb.models.model_meta.ModelMeta._resolve_extras_groups": (
        "a method (self) returning the extras groups ModelMeta._check_requirements checks before loading a model "
        "(mm_st's models drop 'video': they read frame files, mm_st/evaluation/model.py MMSTModelMeta)",
        _signature_is("self")),
    "mteb.abstasks.retrieval.AbsTaskRetrieval._evaluate_subset": (
        "a method (self, model, data_split, *, hf_split, hf_subset, prediction_folder, ...) that AbsTask.evaluate "
        "calls per subset (CIRR's second ranking, mm_st/evaluation/tasks.py)", _evaluate_subset_ok),
}


def _lookup(dotted: str) -> Any:
    """The object named ``dotted`` (``package.module.attribute...``); raises if it is gone."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def mteb_internals_problems() -> list[str]:
    """The entries of :data:`MTEB_INTERNALS` that the installed mteb no longer matches (empty: all match)."""
    problems = []
    for name, (expected, check) in MTEB_INTERNALS.items():
        try:
            ok = check(importlib.util.find_spec(name) if name == BENCHMARKS_MODULE else _lookup(name))
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            problems.append(f"{name} is gone ({exc!r}); expected {expected}")
            continue
        if not ok:
            problems.append(f"{name} changed; expected {expected}")
    return problems


def benchmark_modules() -> list[types.ModuleType]:
    """The benchmark modules: every module of :mod:`mm_st.evaluation.benchmarks` (``pkgutil`` over its
    ``__path__``) whose name does not start with ``_``, in name order. Each has ``TASKS`` and ``BENCHMARK``."""
    found = sorted(info.name for info in pkgutil.iter_modules(benchmarks.__path__) if not info.name.startswith("_"))
    return [importlib.import_module(f"{benchmarks.__name__}.{name}") for name in found]


def registry_attribute(module: types.ModuleType) -> str:
    """The attribute of ``mteb.benchmarks.benchmarks`` a benchmark module's benchmark is registered as
    (``MM_ST_<MODULE NAME>``, e.g. ``MM_ST_MMEB``)."""
    return "MM_ST_" + module.__name__.rsplit(".", 1)[-1].upper()


def register() -> None:
    """Register mm_st's tasks, benchmarks and models with mteb (idempotent).

    Raises:
        RuntimeError: the installed mteb changed an internal registration relies on.
    """
    if _state["done"]:
        return
    problems = mteb_internals_problems()
    if problems:
        raise RuntimeError(
            f"mm_st cannot register with mteb {mteb.__version__}: internals it relies on changed (mteb has no "
            "plugin API): " + "; ".join(problems) + ". Install an mteb within mm_st's tested range."
        )
    modules = benchmark_modules()
    _register_tasks(modules)
    _register_benchmarks(modules)
    _register_models()
    if _is_mteb_command(sys.argv):
        sys.excepthook = cli_excepthook(sys.excepthook)
    _state["done"] = True


def _is_mteb_command(argv: list[str]) -> bool:
    """Whether this process is the ``mteb`` command (its console script, or ``python -m mteb``)."""
    script = Path(argv[0]) if argv and argv[0] else Path()
    return script.name in ("mteb", "mteb.exe") or (script.name == "__main__.py" and script.parent.name == "mteb")


def cli_excepthook(previous: Callable[..., Any]) -> Callable[..., Any]:
    """A ``sys.excepthook`` that prints an mm_st input error as one ``module.Error: message`` entry, the line
    that ends Python's (and so mteb's) traceback of any error, without the traceback above it; any other error
    goes to ``previous``."""

    def hook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        if issubclass(kind, (DataLayoutError, UntrustedModelCode)) and os.environ.get("MM_ST_TRACEBACK") != "1":
            print(f"{kind.__module__}.{kind.__qualname__}: {error}", file=sys.stderr, flush=True)
        else:
            previous(kind, error, traceback)

    return hook


def _register_tasks(modules: list[types.ModuleType]) -> None:
    registry = importlib.import_module("mteb.get_tasks")  # the module (``mteb.get_tasks`` is the function)
    added = []
    for cls in (cls for module in modules for cls in module.TASKS):
        name = cls.metadata.name
        existing = registry._TASKS_REGISTRY.get(name)
        if existing is None:
            registry._TASKS_REGISTRY[name] = cls
            added.append(cls)
        elif existing is not cls:
            logger.warning("mteb already has a task named %r; mm_st's is not registered.", name)
    registry.TASK_LIST = tuple(registry.TASK_LIST) + tuple(added)


def _register_benchmarks(modules: list[types.ModuleType]) -> None:
    """Add the benchmarks to ``mteb.benchmarks.benchmarks`` now if it is imported, else right after its first import
    (``mteb.get_benchmark(s)`` or a direct import): importing it builds every mteb benchmark, a second of CPU that
    a process asking for no benchmark (``import mteb``, ``mteb.get_task``) does not pay."""
    _state["benchmark_modules"] = modules
    if BENCHMARKS_MODULE in sys.modules:
        _add_benchmarks(sys.modules[BENCHMARKS_MODULE])
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(BENCHMARKS_MODULE, _add_benchmarks))


def _add_benchmarks(module: types.ModuleType) -> None:
    """Set each benchmark module's benchmark on mteb's benchmark ``module`` (a name it has is kept) and empty the
    registry builders' caches."""
    get_benchmark = importlib.import_module("mteb.benchmarks.get_benchmark")
    for benchmark_module in _state.pop("benchmark_modules", []):
        attribute = registry_attribute(benchmark_module)
        if benchmark_module.BENCHMARK is not None and not hasattr(module, attribute):
            setattr(module, attribute, benchmark_module.BENCHMARK())
    get_benchmark._build_registry.cache_clear()
    get_benchmark._build_aliases_registry.cache_clear()


class _AfterImport:
    """``sys.meta_path`` finder: runs ``then(module)`` right after the module ``name`` has been imported (its real
    spec, found by the path finder, with a wrapped loader), then leaves ``sys.meta_path``."""

    def __init__(self, name: str, then: Callable[[types.ModuleType], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self)
        return spec


class _ThenLoader:
    """Delegates to the module's own loader; after a successful ``exec_module`` runs its finder's ``then``."""

    def __init__(self, loader: Any, finder: _AfterImport) -> None:
        self._loader, self._finder = loader, finder

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        self._finder.then(module)

    def __getattr__(self, name: str) -> Any:  # get_source, resource readers, ... of the wrapped loader
        return getattr(self._loader, name)


def _register_models() -> None:
    lookup = importlib.import_module("mteb.models.get_model_meta")
    from mteb.models.model_implementations import MODEL_REGISTRY

    for meta in paper_models():
        MODEL_REGISTRY.setdefault(meta.name, meta)

    original = lookup.get_model_meta
    if getattr(original, "_mm_st", False):
        return

    @functools.wraps(original)
    def get_model_meta(model_name, revision=None, fetch_from_hf=False, fill_missing=False, experiment_kwargs=None):
        if model_name not in MODEL_REGISTRY:
            meta = mm_st_model_meta(model_name, revision, allow_hub=fetch_from_hf)
            if meta is not None:
                return meta if experiment_kwargs is None else meta.model_copy(update={"experiment_kwargs": experiment_kwargs})
        return original(model_name, revision, fetch_from_hf, fill_missing, experiment_kwargs)

    get_model_meta._mm_st = True
    lookup.get_model_meta = get_model_meta
    mteb.get_model_meta = get_model_meta
