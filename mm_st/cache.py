"""mm_st's on-disk cache: where it lives, and building a cached directory atomically.

The cache root is ``$MM_ST_CACHE`` (default ``~/.cache/mm_st``). A cached directory is complete
when it holds its marker file; it is written to a temporary sibling and renamed into place, so an
interrupted build never leaves a partial directory. Concurrent builders of one directory (processes or threads)
take turns (a lock file per directory in the temporary folder, POSIX): one builds, the others wait and reuse its
copy.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "thing"
    >>> def write(directory):
    ...     (directory / "data.txt").write_text("hello")
    ...     (directory / ".done").write_text("")
    >>> build_atomically(target, ".done", write) == str(target), (target / "data.txt").read_text()
    (True, 'hello')
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no lock; concurrent builders both build and the first rename wins
    fcntl = None


def cache_root() -> Path:
    return Path(os.environ.get("MM_ST_CACHE", Path.home() / ".cache" / "mm_st")).expanduser()


def build_atomically(directory: Path, marker: str, write: Callable[[Path], None]) -> str:
    """Return ``directory``, first building it with ``write(tmp)`` unless ``directory/marker`` exists.

    ``write`` must create ``marker`` last. A leftover without the marker is removed and rebuilt.
    """
    if (directory / marker).is_file():
        return str(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(directory):
        if (directory / marker).is_file():  # built by whoever held the lock before us
            return str(directory)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
        try:
            write(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it 0o700
            try:
                os.rename(tmp, directory)
            except OSError:
                # Another builder (without the lock: no fcntl) finished first: keep its copy if complete.
                if not (directory / marker).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(directory)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold the exclusive build lock of ``directory`` while the block runs; waits for other holders.

    The lock file lies in the temporary folder (named by a hash of the absolute path), so the cache holds only
    complete directories."""
    if fcntl is None:
        yield
        return
    locks = Path(tempfile.gettempdir()) / f"mm_st-locks-{os.getuid()}"
    locks.mkdir(mode=0o700, exist_ok=True)
    name = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]
    with open(locks / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
