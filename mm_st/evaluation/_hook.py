"""Start-up hook: register mm_st with mteb when (and only when) mteb is imported.

Shipped as the top-level module ``_mm_st_mteb_hook`` with a one-line ``mm_st_mteb.pth`` file in
site-packages (Python runs ``import`` lines of ``.pth`` files at start-up, see the ``site`` docs)::

    import _mm_st_mteb_hook; _mm_st_mteb_hook.install()

``install`` only puts a finder on ``sys.meta_path`` (standard library only: no torch, no mteb, no
mm_st at start-up). When ``mteb`` is imported, the finder lets the normal machinery find it and
wraps its loader, so that right after ``mteb/__init__`` has run,
``mm_st.evaluation.registry.register()`` registers mm_st's tasks, benchmarks and models. A failure there is a warning, never a broken
``import mteb``. ``MM_ST_MTEB_PLUGIN=0`` disables the hook.

Example (what the ``.pth`` line does)::

    import _mm_st_mteb_hook; _mm_st_mteb_hook.install()
    import mteb                                   # now also registers mm_st
    mteb.get_task("MMEB-VOC2007")
"""

import os
import sys

TARGET = "mteb"


def _register() -> None:
    try:
        from mm_st.evaluation.registry import register

        register()
    except Exception as exc:  # a broken plugin must not break `import mteb`
        import warnings

        warnings.warn(f"mm_st could not register its mteb tasks and models: {exc!r}", stacklevel=2)


class _Loader:
    """Delegates to mteb's own loader, then registers mm_st (a plain class: importlib.abc costs start-up time)."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register()

    def __getattr__(self, name):  # resource readers, get_source, ... of the wrapped loader
        return getattr(self._loader, name)


class _Finder:
    """``sys.meta_path`` finder that only answers for ``mteb``, with mteb's real spec and a wrapped loader."""

    mm_st_mteb_hook = True

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET or self._searching:
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
