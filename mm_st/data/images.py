"""Image references of the training converters: resolved inside their root(s), each file checked once, and what a
missing or unreadable one does (:data:`ON_MISSING`: ``"error"`` names the first few, ``"skip"`` drops their rows).

Every training-data format (:mod:`mm_st.data.mmeb_train`, :mod:`mm_st.data.mme5_synthetic`,
:mod:`mm_st.data.mbeir_train`) records its images in one :class:`ImageChecker` and ends with
:func:`report_missing`.

Example:
    >>> import tempfile
    >>> checker = ImageChecker(image_roots(tempfile.mkdtemp()))
    >>> checker.resolve("cat.png", "row 0 qry") is None, checker.problems
    (True, ["row 0 qry: 'cat.png'"])
    >>> report_missing("MSCOCO", checker.problems, {0}, "error", 1)
    Traceback (most recent call last):
    ...
    FileNotFoundError: MSCOCO: 1 image reference(s) missing or unreadable in 1 of 1 rows; first ones:
      row 0 qry: 'cat.png'
    Fix the image root, or drop those rows with on_missing='skip' (training recipes: --on-missing skip).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mm_st.inputs import check_image_file
from mm_st.io import resolve_inside

logger = logging.getLogger("mm_st.data.converters")  # the converters' logger, as before the split

ON_MISSING = ("error", "skip")  # what a missing or unreadable image does (converters' and recipes' on_missing)


@dataclass
class ImageChecker:
    """Resolves image paths inside the root(s), checks each file once and collects problems."""

    roots: list[Path]
    verify: bool = True
    problems: list[str] = field(default_factory=list)
    _seen: dict[str, str | None] = field(default_factory=dict)

    def resolve(self, rel: str, where: str) -> str | None:
        """Absolute path of a readable image, or None (the problem is recorded)."""
        if rel in self._seen:
            status = self._seen[rel]
            if status is None:
                self.problems.append(where)
            return status
        found = None
        for root in self.roots:
            full = resolve_inside(root, rel, where)
            if full.is_file():
                found = full
                break
        status = None
        if found is not None:
            try:
                check_image_file(found, 0) if self.verify else None
                status = str(found)
            except (OSError, ValueError):
                status = None
        self._seen[rel] = status
        if status is None:
            self.problems.append(f"{where}: {rel!r}")
        return status


def image_roots(image_root: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if image_root is None:
        return []
    items = [image_root] if isinstance(image_root, (str, os.PathLike)) else list(image_root)
    roots = [Path(item).resolve() for item in items]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"Image root {str(root)!r} is not a directory.")
    return roots


def report_missing(name: str, problems: list[str], bad_rows: set[int], on_missing: str, total: int) -> None:
    """With ``on_missing="error"`` the problems (the first five named) are a FileNotFoundError; with ``"skip"`` the
    dropped rows are counted in a warning."""
    if not problems:
        return
    if on_missing == "error":
        first = "\n  ".join(problems[:5])
        raise FileNotFoundError(
            f"{name}: {len(problems)} image reference(s) missing or unreadable in {len(bad_rows)} of {total} rows; "
            f"first ones:\n  {first}\nFix the image root, or drop those rows with on_missing='skip' (training recipes: "
            "--on-missing skip)."
        )
    logger.warning("%s: dropped %d of %d rows with missing or unreadable images.", name, len(bad_rows), total)


def check_on_missing(on_missing: str) -> None:
    """``on_missing`` must be one of :data:`ON_MISSING`."""
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}.")
