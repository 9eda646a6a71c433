"""Training data for a recipe config: the paper's layout through ``mm_st.data``'s converters.

``resolve_sources`` fills the embedded default (emoji written in the paper's layout under the run's
output directory); ``load_datasets`` reads the data as one dataset per source dataset;
``mine_mme5_negatives`` adds mmE5's mined MMEB-train negative; ``training_dataset`` forms what the
trainer gets (one shuffled concatenation, or a ``DatasetDict`` drawn one dataset per batch).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from mm_st.data import load_mme5_synthetic, load_mmeb_train, load_nli
from mm_st.io import is_local
from mm_st.training import embedded
from mm_st.training.config import E5VConfig, MME5Config, RecipeConfig

logger = logging.getLogger(__name__)


@dataclass
class Sources:
    """Where the run reads from (after the embedded default is written)."""

    data: str
    image_root: str | None
    synthetic: str | None = None
    synthetic_image_root: str | None = None
    eval_data: str | None = None


def resolve_sources(config: RecipeConfig, output_dir: Path, write: bool = True) -> Sources:
    """The data locations; with the embedded default, the emoji files under ``output_dir/data`` (written once)."""
    if config.embedded:
        root = output_dir / "data"
        if isinstance(config, E5VConfig):
            data = root / "nli_for_simcse.csv"
            if write:  # cheap, and the sibling negatives depend on the seed
                embedded.write_nli(root, limit=config.max_rows_per_dataset, seed=config.seed)
            image_root = None
        else:
            data = root / "mmeb-train"
            if write:
                embedded.write_mmeb_train(data, configs=config.data_configs, split=config.data_split,
                                          limit=config.max_rows_per_dataset, seed=config.seed)
            image_root = str(data / "images")
        synthetic = None
        if isinstance(config, MME5Config):
            synthetic = root / "mme5-synthetic"
            if write:
                embedded.write_mme5_synthetic(synthetic, configs=config.synthetic_configs,
                                              limit=config.max_rows_per_dataset, seed=config.seed)
        eval_data = config.eval_data or str(root / "xtd-heldout")
        needed = ["test_image_names.txt", *(f"test_1kcaptions_{lang}.txt" for lang in config.eval_languages)]
        if write and config.eval_data is None and not all((Path(eval_data) / name).is_file() for name in needed):
            embedded.write_xtd(eval_data, languages=config.eval_languages)
        return Sources(str(data), image_root, str(synthetic) if synthetic else None,
                       str(synthetic / "images") if synthetic else None, eval_data)
    if config.data is None:
        raise ValueError(f"{config.recipe} config: --model is set but --data is not; give the training data too.")
    synthetic = getattr(config, "synthetic_data", None)
    if isinstance(config, MME5Config) and synthetic is None:
        from mm_st.data.converters import MME5_SYNTHETIC_REPO

        synthetic = MME5_SYNTHETIC_REPO
    synthetic_root = getattr(config, "synthetic_image_root", None)
    return Sources(config.data, config.image_root, synthetic, synthetic_root, config.eval_data)


def check_sources(config: RecipeConfig, sources: Sources) -> None:
    """Fail early on a missing local file or directory, naming it."""
    if isinstance(config, E5VConfig):
        return  # load_nli names a missing file
    named = (("image_root", sources.image_root), ("synthetic_image_root", sources.synthetic_image_root),
             ("eval_data", sources.eval_data))
    for what, value in named:
        if value is not None and not Path(value).is_dir():
            raise FileNotFoundError(f"{config.recipe} config: {what} {value!r} is not a directory.")
    if sources.image_root is None and not getattr(config, "synthetic_only", False):
        raise ValueError(f"{config.recipe} config: image_root is not set; MMEB-train's images ship as a separate archive "
                         "(unpack it and pass --image-root).")
    pairs = [] if getattr(config, "synthetic_only", False) else [(sources.data, config.data_configs, config.data_split)]
    if sources.synthetic is not None:
        pairs.append((sources.synthetic, config.synthetic_configs, "train"))
    for source, configs, _ in pairs:
        if is_local(source):
            if not Path(source).is_dir():
                raise FileNotFoundError(f"{config.recipe} config: data directory {source!r} not found.")
            present = sorted(p.name for p in Path(source).iterdir() if p.is_dir() and p.name != "images")
            unknown = [c for c in configs if c not in present]
            if unknown:
                raise ValueError(f"{config.recipe} config: dataset config(s) {unknown} not in {source!r}; it has {present}.")


def _cap(ds: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def load_datasets(config: RecipeConfig, sources: Sources) -> dict[str, datasets.Dataset]:
    """One training dataset per source dataset (before mining), capped by ``max_rows_per_dataset``."""
    if isinstance(config, E5VConfig):
        nli = load_nli(_hub_file(sources.data))
        return {"nli": _cap(nli, config.max_rows_per_dataset)}
    out: dict[str, datasets.Dataset] = {}
    synthetic_only = getattr(config, "synthetic_only", False)
    if not synthetic_only:
        mined = isinstance(config, MME5Config) and config.mine_rank > 0  # mmE5 mines MMEB-train's negative
        mmeb = load_mmeb_train(sources.data, config.data_configs, split=config.data_split, image_root=sources.image_root,
                               num_negatives=0 if mined else config.num_negatives, seed=config.seed)
        out.update({name: _cap(ds, config.max_rows_per_dataset) for name, ds in mmeb.items()})
    if sources.synthetic is not None:
        synthetic = load_mme5_synthetic(sources.synthetic, config.synthetic_configs, image_root=sources.synthetic_image_root,
                                        num_negatives=config.num_negatives, seed=config.seed)
        out.update({f"synthetic/{name}": _cap(ds, config.max_rows_per_dataset) for name, ds in synthetic.items()})
    return out


def _hub_file(source: str) -> str:
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


def mine_mme5_negatives(model: Any, named: dict[str, datasets.Dataset], config: MME5Config,
                        cache_dir: Path) -> dict[str, datasets.Dataset]:
    """mmE5's MMEB-train negatives: per dataset, the candidate at rank ``mine_rank`` among the distinct positives."""
    from mm_st.mining import mine_hard_negatives

    out = {}
    for name, ds in named.items():
        if name.startswith("synthetic/"):
            out[name] = ds
            continue
        mined = mine_hard_negatives(model, list(ds["anchor"]), None, list(ds["positive"]), strategy="window",
                                    ranks=config.mine_rank, num_negatives=1, cache_dir=cache_dir / name,
                                    show_progress_bar=os.environ.get("RANK", "0") == "0")
        logger.info("%s: mined the rank-%d negative for %d of %d rows", name, config.mine_rank, len(mined), len(ds))
        out[name] = pad_negatives(mined, config.num_negatives)
    return out


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
