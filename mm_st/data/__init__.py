"""Datasets: the bundled emoji data and converters for the papers' training sets."""

from mm_st.data.columns import INPUT_FEATURE, INSTRUCTED_INPUT_FEATURE, make_input, modality_of
from mm_st.data.converters import load_mbeir, load_mme5_synthetic, load_mmeb_train, load_nli, load_text_pairs
from mm_st.data.mbeir import mbeir_instructions, mbeir_pool_files
from mm_st.data.rows import read_rows
from mm_st.data.emoji import EMOJI_LANGUAGES, load_emoji

__all__ = [
    "EMOJI_LANGUAGES",
    "INPUT_FEATURE",
    "INSTRUCTED_INPUT_FEATURE",
    "load_emoji",
    "load_mbeir",
    "load_mme5_synthetic",
    "load_mmeb_train",
    "load_nli",
    "load_text_pairs",
    "make_input",
    "mbeir_instructions",
    "mbeir_pool_files",
    "modality_of",
    "read_rows",
]
