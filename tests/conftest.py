import pytest


@pytest.fixture(scope="session")
def emoji_images():
    """A few real images from the bundled emoji data (RGB PIL)."""
    from mm_st.data import load_emoji

    test = load_emoji("test")
    return [test[i]["image"].convert("RGB") for i in range(4)]


# Scripts run as subprocesses by the tests; importing them (doctest collection) would run them.
collect_ignore = ["dist_loss_worker.py", "synthesis_crash_worker.py"]
