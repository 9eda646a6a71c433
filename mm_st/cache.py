"""mm_st's on-disk cache: where it lives, and building a cached directory atomically.

The cache root is ``$MM_ST_CACHE`` (default ``~/.cache/mm_st``). A cached directory is complete
when it holds its marker file; it is written to a temporary sibling and renamed into place, so an
interrupted build never leaves a partial directory, and concurrent builders keep the first copy.

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

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MM_ST_CACHE", Path.home() / ".cache" / "mm_st")).expanduser()


def build_atomically(directory: Path, marker: str, write: Callable[[Path], None]) -> str:
    """Return ``directory``, first building it with ``write(tmp)`` unless ``directory/marker`` exists.

    ``write`` must create ``marker`` last. A leftover without the marker is removed and rebuilt.
    """
    if (directory / marker).is_file():
        return str(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it 0o700
        try:
            os.rename(tmp, directory)
        except OSError:
            # Another process finished first: keep its copy if complete.
            if not (directory / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(directory)
