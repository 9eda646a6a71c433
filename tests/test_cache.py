"""mm_st.cache.build_atomically: concurrent builders of one directory build it once (pytest-xdist workers share
one MM_ST_CACHE, so the SmolLM2 conversion and the tiny models are built once per run, not once per worker)."""

import threading
import time

from mm_st.cache import build_atomically


def test_concurrent_builders_build_once_and_all_get_the_complete_directory(tmp_path):
    target = tmp_path / "cache" / "thing"
    calls, results = [], []
    start = threading.Barrier(3)

    def write(directory):
        calls.append(directory)
        time.sleep(0.5)  # the others arrive while this build runs
        (directory / "data.txt").write_text("built")
        (directory / ".done").write_text("")

    def build():
        start.wait()
        results.append(build_atomically(target, ".done", write))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [str(target)] * 3 and (target / "data.txt").read_text() == "built"
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing"]  # no temporary or lock files in the cache
