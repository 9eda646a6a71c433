"""Bundled emoji image–text dataset (mm_st.data.emoji)."""

import pyarrow.parquet as pq
import pytest

import importlib.util
from pathlib import Path

from mm_st.data import EMOJI_LANGUAGES, load_emoji

_spec = importlib.util.spec_from_file_location("build_emoji", Path(__file__).resolve().parents[2] / "scripts" / "build_emoji.py")
build_emoji = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_emoji)  # the maintainer script that built the bundled data

N_TRAIN, N_TEST = 1458, 391  # as printed by `python scripts/build_emoji.py`
GROUPS = {
    "Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
    "Travel & Places", "Activities", "Objects", "Symbols", "Flags",
}


@pytest.fixture(scope="module")
def ds():
    return load_emoji()


def test_splits_and_counts(ds):
    assert set(ds) == {"train", "test"}
    assert (len(ds["train"]), len(ds["test"])) == (N_TRAIN, N_TEST)
    assert len(load_emoji("test")) == N_TEST


def test_split_rule_and_disjoint(ds):
    train, test = set(ds["train"]["emoji"]), set(ds["test"]["emoji"])
    assert len(train) == N_TRAIN and len(test) == N_TEST and not train & test
    assert all(build_emoji.is_test(e) for e in test)
    assert not any(build_emoji.is_test(e) for e in train)


def test_image(ds):
    for split in ("train", "test"):
        for i in (0, len(ds[split]) // 2, len(ds[split]) - 1):
            img = ds[split][i]["image"]
            assert img.size == (64, 64) and img.mode == "RGB"
            assert img.getextrema() != ((255, 255), (255, 255), (255, 255))


def test_names_and_keywords(ds):
    train = ds["train"]
    name_cols = [c for c in train.column_names if c.startswith("name_")]
    assert len(name_cols) >= 8 and name_cols == [f"name_{lang}" for lang in EMOJI_LANGUAGES]
    for lang in ("en", "de", "fr", "es", "ja", "zh", "ru"):
        names = train[f"name_{lang}"]
        assert sum(n is not None for n in names) >= 0.9 * len(names), lang
    assert all(train["name_en"])
    assert train[0]["name_en"] == "grinning face" and train[0]["codepoints"] == "1F600"
    assert isinstance(train[0]["keywords_de"], list) and train[0]["keywords_de"]


def test_groups(ds):
    groups = set(ds["train"]["group"]) | set(ds["test"]["group"])
    assert "Smileys & Emotion" in groups and groups <= GROUPS


def test_bad_split():
    with pytest.raises(ValueError, match="train.*test"):
        load_emoji("validation")


def test_rebuild_is_identical(tmp_path):
    if not build_emoji.FONT.exists() or not build_emoji.EMOJI_TEST.exists():
        pytest.skip("Debian packages fonts-noto-color-emoji / unicode-data not installed")
    build_emoji.build(tmp_path)
    for split in ("train", "test"):
        new = pq.read_table(tmp_path / f"{split}.parquet")
        old = pq.read_table(build_emoji.DEFAULT_OUT / f"{split}.parquet")
        assert new.slice(0, 50).equals(old.slice(0, 50)) and new.num_rows == old.num_rows


def test_missing_data_dir(tmp_path, monkeypatch):
    from mm_st.data import emoji

    monkeypatch.setattr(emoji, "DATA_DIR", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="build_emoji"):
        load_emoji("train")
