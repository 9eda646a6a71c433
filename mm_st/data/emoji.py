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
from typing import NamedTuple

import datasets

from mm_st.modality import IMAGE_TEXT, to_mbeir

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


# --------------------------------------------------------------------------------------------------
# The bundled emoji as M-BEIR tasks (MM-Embed's embedded default)
#
# ``mm_st.training.embedded.write_mbeir`` writes them in the M-BEIR layout (its
# ``instructions/query_instructions.tsv`` holds these instructions); ``mm_st.evaluation`` declares its
# ``MMST-MBEIR-Emoji_*`` tasks from the same table, so training and evaluation read one instruction.


class EmojiMBEIRTask(NamedTuple):
    """One emoji M-BEIR task: UniIR task id, query and candidate modality (M-BEIR spelling), instruction."""

    task_id: int
    query_modality: str
    candidate_modality: str
    instruction: str


EMOJI_MBEIR_DATASET = ("10", "Emoji")  # M-BEIR dataset id (UniIR uses 0-9) and name
# Task ids follow UniIR's MBEIR_TASK (TIGER-AI-Lab/UniIR src/data/preprocessing/utils.py): 0 text->image,
# 1 text->text, 3 image->text, 4 image->image, 6 image,text->text.
EMOJI_MBEIR_TASKS: dict[str, EmojiMBEIRTask] = {
    "Emoji_t2i": EmojiMBEIRTask(0, "text", "image", "Find the emoji image that matches the given name."),
    "Emoji_i2t": EmojiMBEIRTask(3, "image", "text", "Find the name of the emoji shown in the image."),
    "Emoji_t2t": EmojiMBEIRTask(1, "text", "text", "Find the keywords that describe this emoji name."),
    "Emoji_i2i": EmojiMBEIRTask(4, "image", "image", "Find the plain emoji image that shows the same emoji as the given picture."),
    "Emoji_it2t": EmojiMBEIRTask(6, to_mbeir(IMAGE_TEXT), "text", "Find the category name that answers the question about the emoji image."),
}
# Where write_mbeir puts each task's queries and the split's one pool (relative to the M-BEIR root)
EMOJI_MBEIR_QUERY_FILE = "query/{split}/mbeir_emoji_task{task_id}_{split}.jsonl"
EMOJI_MBEIR_POOL_FILE = "cand_pool/local/mbeir_emoji_{split}_cand_pool.jsonl"
