"""The pool of real images samples are grounded in: a local directory or a ``datasets`` image column.

Each image has an index (what the plan stores) and a relative export path (where the export writes
it, below the export's ``images/`` root: a directory's own relative path, or ``pool/{index:08d}.png``).

Example:
    >>> from mm_st.synthesis.images import ImagePool
    >>> pool = ImagePool.open("mm_st:emoji")
    >>> len(pool) > 1000, pool.load(0).mode, pool.relative_path(0)
    (True, 'RGB', 'pool/00000000.png')
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from mm_st.io import is_local, resolve_inside

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


class ImagePool:
    """Indexable real images; :meth:`open` picks the source type."""

    def __init__(self, files: list[str] | None = None, root: Path | None = None, dataset: Any = None, column: str = "image"):
        self.files, self.root, self.dataset, self.column = files, root, dataset, column

    @classmethod
    def open(cls, source: Any, column: str = "image", split: str = "train") -> ImagePool:
        """``source``: a directory of images, ``"mm_st:emoji"``, a ``save_to_disk`` folder, a Hub id,
        or a ``datasets.Dataset`` object. A directory holding a symbolic link that leaves it is refused."""
        import datasets

        if isinstance(source, datasets.Dataset):
            return cls(dataset=source, column=column)
        if source == "mm_st:emoji":
            from mm_st.data import load_emoji

            return cls(dataset=load_emoji(split), column="image")
        path = Path(str(source)).expanduser()
        if path.is_dir() and not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            return cls(files=_image_files(path.resolve()), root=path.resolve())
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            loaded = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        elif is_local(source):
            raise FileNotFoundError(f"Image source {str(source)!r} does not exist.")
        else:
            loaded = datasets.load_dataset(str(source), split=split)
        if column not in loaded.column_names:
            raise ValueError(f"Image source {str(source)!r} has no column {column!r}; columns: {loaded.column_names}.")
        return cls(dataset=loaded, column=column)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.dataset)

    def load(self, index: int) -> Image.Image:
        """The image as RGB PIL."""
        if self.files is not None:
            with Image.open(resolve_inside(self.root, self.files[index], f"Image pool file {index}")) as image:
                return image.convert("RGB")
        image = self.dataset[int(index)][self.column]
        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as opened:
                return opened.convert("RGB")
        return image.convert("RGB")

    def relative_path(self, index: int) -> str:
        """Path of the image below the export's image root."""
        if self.files is not None:
            return self.files[index]
        return f"pool/{int(index):08d}.png"

    def save(self, index: int, image_root: Path) -> str:
        """Write the image below ``image_root`` (once) and return its relative path."""
        rel = self.relative_path(index)
        target = resolve_inside(image_root, rel, f"Image pool file {index}")
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.files is not None:
                import shutil

                shutil.copyfile(resolve_inside(self.root, rel, f"Image pool file {index}"), target)
            else:
                self.load(index).save(target, format="PNG")
        return rel


def _image_files(root: Path) -> list[str]:
    """Relative paths of the image files under ``root``; a symbolic link leaving the root is an error."""
    files = sorted(
        PurePosixPath(p.relative_to(root)).as_posix()
        for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )  # fmt: skip
    for relative in files:
        resolve_inside(root, relative, f"Image pool {str(root)!r}")
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}.")
    return files
