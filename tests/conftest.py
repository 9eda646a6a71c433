import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    """Tiny models are cached per test session (never in the user's cache)."""
    if "MM_ST_CACHE" not in os.environ:
        os.environ["MM_ST_CACHE"] = str(tmp_path_factory.mktemp("mm_st_cache"))
    yield


@pytest.fixture(scope="session")
def emoji_images():
    """A few real images from the bundled emoji data (RGB PIL)."""
    from mm_st.data import load_emoji

    test = load_emoji("test")
    return [test[i]["image"].convert("RGB") for i in range(4)]
