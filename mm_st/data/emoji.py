"""Small multilingual emoji image–text dataset bundled with the package.

~1.8k emoji rendered from Noto Color Emoji (64x64 RGB) with CLDR names and keywords
in 15 languages; split by emoji (see ``emoji/LICENSES.md``).

>>> from mm_st.data import load_emoji
>>> ds = load_emoji()
>>> ds["train"][0]["name_en"]
'grinning face'
"""

from __future__ import annotations

from pathlib import Path

import datasets

EMOJI_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "pl", "tr", "ru", "ar", "hi", "sw", "ja", "zh", "ko")
SPLITS = ("train", "test")
DATA_DIR = Path(__file__).parent / "emoji"


def _load_split(split: str) -> datasets.Dataset:
    import pyarrow.parquet as pq

    path = DATA_DIR / f"{split}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; rebuild it with `python scripts/build_emoji.py` (from a source checkout)")
    # In-memory table: no cache files are written (unlike load_dataset / from_parquet).
    table = pq.read_table(path)
    return datasets.Dataset(datasets.table.InMemoryTable(table), split=datasets.NamedSplit(split))


def load_emoji(split: str | None = None) -> datasets.DatasetDict | datasets.Dataset:
    """Load the emoji dataset: a ``DatasetDict`` (train/test), or one split."""
    if split is None:
        return datasets.DatasetDict({s: _load_split(s) for s in SPLITS})
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return _load_split(split)
