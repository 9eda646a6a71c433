"""mmE5's synthetic data (``intfloat/mmE5-synthetic``): the VLM2Vec layout of :mod:`mm_st.data.mmeb_train`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import datasets

from mm_st.data.mmeb_train import load_vlm2vec_layout

MME5_SYNTHETIC_REPO = "intfloat/mmE5-synthetic"
MME5_SYNTHETIC_CONFIGS = ("Classification", "Retrieval", "VQA")


def load_mme5_synthetic(
    source: str | os.PathLike = MME5_SYNTHETIC_REPO,
    configs: Iterable[str] = MME5_SYNTHETIC_CONFIGS,
    split: str = "train",
    image_root: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    num_negatives: int | None = None,
    on_missing: str = "error",
    verify_images: bool = True,
    empty_negative_text: str = "fill",
    seed: int = 0,
) -> datasets.DatasetDict:
    """mmE5's synthetic data (``intfloat/mmE5-synthetic``: Classification, Retrieval, VQA) per config.

    Same columns as MMEB-train; ``neg_text`` / ``neg_image_path`` hold lists (or their Python-literal
    strings), so by default every negative becomes a column (mmE5 scores them against their own
    query only: train with ``MultimodalInfoNCELoss(hard_negative_scope="own")``). ``image_root`` may
    be a list of directories, searched in order (mmE5's ``image_dir`` then ``laion_image_dir``).
    An empty negative text is filled as mmE5's loader does (``empty_negative_text="fill"``; ``"keep"``
    keeps an image-only negative), see the module docstring.
    """
    layout = "{source}/{config}/{split}*.parquet with columns qry, qry_image_path, pos_text, pos_image_path, neg_text, neg_image_path"
    return load_vlm2vec_layout(
        source, configs, split, image_root, num_negatives, on_missing, verify_images, layout, empty_negative_text, seed
    )
