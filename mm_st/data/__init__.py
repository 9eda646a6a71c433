"""Datasets: the bundled emoji data and converters for the papers' training sets."""

from mm_st.data.columns import INPUT_FEATURE, INSTRUCTED_INPUT_FEATURE, make_input, modality_of
from mm_st.data.mbeir_train import load_mbeir
from mm_st.data.mme5_synthetic import load_mme5_synthetic
from mm_st.data.mmeb_train import load_mmeb_train
from mm_st.data.nli import load_nli
from mm_st.data.text_pairs import load_text_pairs
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
