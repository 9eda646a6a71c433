"""Start-up hook: register mm_st with mteb when (and only when) mteb is imported.

Shipped as the top-level module ``_mm_st_mteb_hook`` with a one-line ``mm_st_mteb.pth`` file in
site-packages (Python runs ``import`` lines of ``.pth`` files at start-up, see the ``site`` docs)::

    import _mm_st_mteb_hook; _mm_st_mteb_hook.install()

``install`` only puts a finder on ``sys.meta_path`` (standard library only: no torch, no mteb, no
mm_st at start-up). When ``mteb`` is imported, the finder lets the normal machinery find it and
wraps its loader, so that right after ``mteb/__init__`` has run, ``mm_st.evaluation.registry.register()``
registers mm_st's tasks, benchmarks and models. When a module of mm_st.evaluation is what imported mteb, that
module is half made at that moment (and registering imports it): registration waits until its import has finished
(the finder wraps the loaders of mm_st.evaluation's modules for that). A failure there is a warning, never a broken
``import mteb``. ``MM_ST_MTEB_PLUGIN=0`` disables the hook.

Example (what the ``.pth`` line does)::

    import _mm_st_mteb_hook; _mm_st_mteb_hook.install()
    import mteb                                   # now also registers mm_st
    mteb.get_task("MMEB-VOC2007")
"""

import os
import sys

TARGET = "mteb"
PACKAGE = "mm_st.evaluation"  # registering imports its modules: not while one of them is half imported
_state = {"pending": False}


def _importing(package: str, but: str | None = None) -> bool:
    """Whether a module of ``package`` (other than ``but``) is being imported right now."""
    return any(
        (name == package or name.startswith(package + ".")) and name != but
        and getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
    )


def _register(finished: str | None = None) -> None:
    """Register mm_st with mteb; when an mm_st.evaluation module is being imported (it imported mteb first), wait
    until that import has finished (``finished``: the module whose import just ended)."""
    if _importing(PACKAGE, but=finished):
        _state["pending"] = True
        return
    _state["pending"] = False
    try:
        from mm_st.evaluation.registry import register

        register()
    except Exception as exc:  # a broken plugin must not break `import mteb`
        import warnings

        warnings.warn(f"mm_st could not register its mteb tasks and models: {exc!r}", stacklevel=2)


class _Loader:
    """Delegates to the module's own loader, then registers mm_st: after ``mteb``, and after a module of
    mm_st.evaluation while registration waits for it (a plain class: importlib.abc costs start-up time)."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if module.__name__ == TARGET:
            _register()
        elif _state["pending"]:
            _register(finished=module.__name__)

    def __getattr__(self, name):  # resource readers, get_source, ... of the wrapped loader
        return getattr(self._loader, name)


class _Finder:
    """``sys.meta_path`` finder that only answers for ``mteb`` and mm_st.evaluation's modules, with their real spec
    and a wrapped loader."""

    mm_st_mteb_hook = True

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path=None, target=None):
        ours = fullname == PACKAGE or fullname.startswith(PACKAGE + ".")
        if (fullname != TARGET and not ours) or self._searching:
            return None
        import importlib.util

        self._searching = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Arrange for mm_st to register with mteb when mteb is imported (or now, if it already is)."""
    if os.environ.get("MM_ST_MTEB_PLUGIN", "1") == "0":
        return
    if TARGET in sys.modules:
        _register()
    elif not any(getattr(finder, "mm_st_mteb_hook", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
