"""Training data helpers shared by the recipes.

:class:`Sources` names what a run reads; :class:`MMEBTrainData` is the MMEB-train part of the recipes
that train on it (VLM2Vec, mmE5): the embedded default written in its layout, the checks, the reading
through :func:`mm_st.data.load_mmeb_train`. :func:`training_dataset` forms what the trainer gets (one
shuffled concatenation, or a ``DatasetDict`` drawn one dataset per batch); :func:`cut_texts` is E5-V's
sentence cut; :func:`pad_negatives` mmE5's negative padding.

Example:
    >>> import datasets
    >>> from mm_st.training.data import pad_negatives
    >>> ds = datasets.Dataset.from_dict({"anchor": ["q"], "positive": ["p"], "negative_1": ["n"]})
    >>> pad_negatives(ds, 3).column_names
    ['anchor', 'positive', 'negative_1', 'negative_2', 'negative_3']
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from mm_st.io import is_local
from mm_st.training import embedded

logger = logging.getLogger(__name__)


@dataclass
class Sources:
    """Where a run reads from (after the embedded default is written).

    ``extra`` holds a recipe's other sources by field name (e.g. mmE5's ``synthetic_data``); entries
    whose name ends in ``image_root`` must be directories, like ``image_root`` and ``eval_data``.
    """

    data: str | None
    image_root: str | None = None
    eval_data: str | None = None
    extra: dict[str, str | None] = field(default_factory=dict)

    def directories(self) -> dict[str, str | None]:
        """The sources that must be existing directories, by name."""
        named = {"image_root": self.image_root, "eval_data": self.eval_data}
        named.update({k: v for k, v in self.extra.items() if k.endswith("image_root")})
        return named


def embedded_dir(config: Any, root: Path, name: str) -> Path:
    """The embedded default's folder for ``name`` under ``root``, named by what its content depends on (seed and
    row cap), so that runs with other values never rewrite it."""
    return root / f"{name}-seed{config.seed}-rows{config.max_rows_per_dataset or 'all'}"


def embedded_eval_data(config: Any, root: Path, write: bool) -> str:
    """The held-out emoji in the XTD layout under ``root`` (written once), unless ``eval_data`` is given."""
    eval_data = config.eval_data or str(root / "xtd-heldout")
    needed = ["test_image_names.txt", *(f"test_1kcaptions_{lang}.txt" for lang in config.eval_languages)]
    if write and config.eval_data is None and not all((Path(eval_data) / name).is_file() for name in needed):
        embedded.write_xtd(eval_data, languages=config.eval_languages)
    return eval_data


def cap(ds: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """The first ``limit`` rows (all when None)."""
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def check_not_empty(named: dict[str, datasets.Dataset], recipe: str) -> None:
    """A dataset with no rows (an empty file, every row skipped) is an error naming it."""
    empty = [name for name, ds in named.items() if len(ds) == 0]
    if empty:
        raise ValueError(f"{recipe}: dataset(s) {empty} have no rows (an empty file, or every row skipped); "
                         "fix or drop them (--data-configs).")


class MMEBTrainData:
    """The MMEB-train data of a recipe config (VLM2Vec layout: ``{data}/{config}/{split}*.parquet`` + images)."""

    def mmeb_sources(self, output_dir: Path, write: bool, with_mmeb: bool = True) -> Sources:
        if self.embedded:
            root = output_dir / "data"
            data = embedded_dir(self, root, "mmeb-train")
            if not with_mmeb:
                return Sources(None, None, embedded_eval_data(self, root, write))
            if write:
                embedded.write_mmeb_train(data, configs=self.data_configs, split=self.data_split,
                                          limit=self.max_rows_per_dataset, seed=self.seed)
            return Sources(str(data), str(data / "images"), embedded_eval_data(self, root, write))
        return Sources(self.data, self.image_root, self.eval_data)

    def check_mmeb_sources(self, sources: Sources) -> None:
        if sources.data is None:
            raise ValueError(f"{self.recipe} config: --model is set but --data is not; give the training data too.")
        if sources.image_root is None:
            raise ValueError(f"{self.recipe} config: image_root is not set; MMEB-train's images ship as a separate "
                             "archive (unpack it and pass --image-root).")
        check_configs_present(self.recipe, sources.data, self.data_configs)

    def load_mmeb(self, sources: Sources, num_negatives: int) -> dict[str, datasets.Dataset]:
        from mm_st.data import load_mmeb_train

        mmeb = load_mmeb_train(sources.data, self.data_configs, split=self.data_split, image_root=sources.image_root,
                               num_negatives=num_negatives, on_missing=self.on_missing, seed=self.seed)
        return {name: cap(ds, self.max_rows_per_dataset) for name, ds in mmeb.items()}


def check_configs_present(recipe: str, source: str, configs: list[str]) -> None:
    """A local data directory must exist and hold every requested config (a folder each)."""
    if not is_local(source):
        return
    if not Path(source).is_dir():
        raise FileNotFoundError(f"{recipe} config: data directory {source!r} not found.")
    present = sorted(p.name for p in Path(source).iterdir() if p.is_dir() and p.name != "images")
    unknown = [c for c in configs if c not in present]
    if unknown:
        raise ValueError(f"{recipe} config: dataset config(s) {unknown} not in {source!r}; it has {present}.")


def hub_file(source: str) -> str:
    """A local file as is; ``org/name/path.csv`` (a file in a Hub dataset repo) downloaded; else a Hub dataset id."""
    if is_local(source) or os.path.isfile(source) or source.count("/") < 2:
        return source
    from huggingface_hub import hf_hub_download

    org, name, filename = source.split("/", 2)
    return hf_hub_download(f"{org}/{name}", filename, repo_type="dataset")


def pad_negatives(ds: datasets.Dataset, count: int) -> datasets.Dataset:
    """Repeat the last negative column up to ``count`` columns (mmE5's ``negative_ratio`` padding)."""
    negatives = [c for c in ds.column_names if c.startswith("negative")]
    if not negatives or len(negatives) >= count:
        return ds
    last = negatives[-1]
    copies = [ds.select_columns([last]).rename_column(last, f"negative_{k}") for k in range(len(negatives) + 1, count + 1)]
    return datasets.concatenate_datasets([ds, *copies], axis=1)  # arrow columns side by side: no image re-encoding


def training_dataset(named: dict[str, datasets.Dataset], mixing: str, seed: int) -> datasets.Dataset | datasets.DatasetDict:
    """``mixed``: one concatenation (the sampler shuffles it); ``per_dataset``: a DatasetDict (one dataset per batch)."""
    if mixing == "per_dataset" or len(named) == 1:
        return datasets.DatasetDict(named) if len(named) > 1 else next(iter(named.values()))
    columns = {name: ds.column_names for name, ds in named.items()}
    first_name, first = next(iter(named.items()))
    for name, cols in columns.items():
        if cols != first.column_names:
            raise ValueError(f"Cannot mix datasets with different columns: {first_name} has {first.column_names}, "
                             f"{name} has {cols}. Use --batch-mixing per_dataset or the same --num-negatives.")
    parts = [ds if ds.features == first.features else ds.cast(first.features) for ds in named.values()]
    return datasets.concatenate_datasets(parts)


def cut_texts(named: dict[str, datasets.Dataset], tokenizer: Any, max_tokens: int) -> dict[str, datasets.Dataset]:
    """Cut every text to ``max_tokens`` tokens before the prompt is added (E5-V's ``cutoff_len`` on the sentence).

    Tokenized without special tokens, truncated and decoded, as kongds/E5-V ``ft_llm.py`` does.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}.")

    def cut(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])

    def row(example: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for column, value in example.items():
            if isinstance(value, str):
                out[column] = cut(value)
            elif isinstance(value, dict) and "text" in value:
                out[column] = {**value, "text": cut(value["text"])}
        return out

    return {name: ds.map(row, desc=f"Cutting {name} texts to {max_tokens} tokens") for name, ds in named.items()}
