"""Settings for every test and doctest (tests/ and the docstring examples in mm_st/): offline, one
torch thread, tiny models cached in a per-session temporary directory (never the user's cache)."""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    if "MM_ST_CACHE" not in os.environ:
        os.environ["MM_ST_CACHE"] = str(tmp_path_factory.mktemp("mm_st_cache"))
    yield
