"""Bundled datasets."""

from mm_st.data.emoji import EMOJI_LANGUAGES, load_emoji

__all__ = ["EMOJI_LANGUAGES", "load_emoji"]
