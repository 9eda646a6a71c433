"""Settings for every test and doctest (tests/ and the docstring examples in mm_st/): offline, one
torch thread (in this process and in every subprocess a test starts), tiny models cached in a per-session
temporary directory (never the user's cache). Under pytest-xdist each worker is its own session with its own
temporary directories; the workers of one run share that run's MM_ST_CACHE."""

import os

# Before torch is imported here or in any subprocess a test starts (recipes, torchrun ranks, mteb, servers): two
# workers sharing two cores must not each start a thread per core.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    if "MM_ST_CACHE" not in os.environ:
        root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = root.parent  # the run's folder: its workers share one cache (mm_st.cache builds each entry once)
        os.environ["MM_ST_CACHE"] = str(root / "mm_st_cache")
    yield


def pytest_collection_finish(session):
    """Exclude what exists once the tests are collected (torch, transformers, mteb, mm_st: about a million objects)
    from every later garbage collection: a full collection scans every tracked object, and the trainer's
    ``accelerator.free_memory()`` runs one at the start of each training run (0.4 s or more each, in a worker)."""
    import gc

    gc.collect()
    gc.freeze()
