"""Export accepted samples in the ``intfloat/mmE5-synthetic`` layout, with a dataset card; push to the Hub.

Layout written to ``export_dir``::

    Classification/train-00000-of-00001.parquet     (one config per task present)
    Retrieval/train-00000-of-00001.parquet
    VQA/train-00000-of-00001.parquet
    images/...                                      (paths in the rows are relative to this root)
    README.md                                       (card from hub_cards/mme5_synthetic_dataset_card.md.jinja)

Columns: ``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``, ``neg_text`` (list),
``neg_image_path`` (list); a text whose input has an image starts with ``<|image_1|>\\n``; the query
text is ``{task instruction}\\n{query}``; an image-only target's text is ``config.image_only_text``.
Extra columns (ignored by the converter): ``id``, ``language``, ``modality``, ``score_*``.

Example::

    ds = export_dataset("runs/syn", "runs/syn-export")
    from mm_st.data import load_mme5_synthetic
    train = load_mme5_synthetic("runs/syn-export", configs=list(ds), image_root="runs/syn-export/images")
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import jinja2

from mm_st.synthesis.config import TASK_CONFIG_NAMES, PlannedSample, SynthesisConfig, parse_combination, plan_samples
from mm_st.synthesis.images import ImagePool
from mm_st.synthesis.prompts import SCORE_KEYS
from mm_st.synthesis.runner import CONFIG, JOURNAL, SUMMARY, Journal, summarize

PLACEHOLDER = "<|image_1|>\n"
CARD_TEMPLATE = resources.files("mm_st.hub_cards").joinpath("mme5_synthetic_dataset_card.md.jinja")
FEATURES = datasets.Features({
    "id": datasets.Value("string"), "language": datasets.Value("string"), "modality": datasets.Value("string"),
    "qry": datasets.Value("string"), "qry_image_path": datasets.Value("string"),
    "pos_text": datasets.Value("string"), "pos_image_path": datasets.Value("string"),
    "neg_text": datasets.List(datasets.Value("string")), "neg_image_path": datasets.List(datasets.Value("string")),
    **{f"score_{k}": datasets.Value("int32") for k in SCORE_KEYS},
})  # fmt: skip


def _row(record: dict, plan: PlannedSample, pool: ImagePool, image_root: Path, image_only_text: str) -> dict[str, Any]:
    sample = record["sample"]
    query_side, target_side = parse_combination(plan.combination)
    paths = {role: pool.save(index, image_root) for role, index in plan.images.items()}
    query = sample["task_instruction"] + (f"\n{sample['query']}" if "T" in query_side else "")

    def target(text: str) -> str:
        return (PLACEHOLDER if "I" in target_side else "") + (text if "T" in target_side else image_only_text)

    return {
        "id": plan.id, "language": plan.language, "modality": plan.combination,
        "qry": (PLACEHOLDER if "I" in query_side else "") + query, "qry_image_path": paths.get("query", ""),
        "pos_text": target(sample["positive"]), "pos_image_path": paths.get("positive", ""),
        "neg_text": [target(sample["hard_negative"])], "neg_image_path": [paths.get("negative", "")],
        **{f"score_{k}": int(record["evaluation"][k]) for k in SCORE_KEYS},
    }  # fmt: skip


def export_dataset(
    run_dir: str | os.PathLike, export_dir: str | os.PathLike, *, config: SynthesisConfig | None = None,
    pool: ImagePool | None = None, card_template: str | os.PathLike | None = None, dataset_name: str = "mmE5-style synthetic data",
) -> datasets.DatasetDict:  # fmt: skip
    """Accepted samples of a run directory -> parquet configs + images + README card; returns the DatasetDict."""
    run_dir, export_dir = Path(run_dir), Path(export_dir)
    if config is None:
        config = SynthesisConfig(**json.loads((run_dir / CONFIG).read_text(encoding="utf-8")))
    pool = pool or ImagePool.open(config.image_source, config.image_column, config.image_split)
    plan = plan_samples(config, len(pool))
    records = Journal(run_dir / JOURNAL).load()
    image_root = export_dir / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {}
    for sample in plan:  # plan order: deterministic export
        record = records.get(sample.id)
        if record is not None and record["status"] == "accepted":
            rows.setdefault(TASK_CONFIG_NAMES[sample.task], []).append(_row(record, sample, pool, image_root, config.image_only_text))
    result = {}
    for name in sorted(rows):
        ds = datasets.Dataset.from_list(rows[name], features=FEATURES)
        (export_dir / name).mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(export_dir / name / "train-00000-of-00001.parquet"))
        result[name] = ds
    generators = sorted({r.get("generator", "") for r in records.values()} - {""})
    summary = summarize(plan, records, ", ".join(generators))
    card = render_card(config, summary, sorted(result), {k: len(v) for k, v in result.items()}, dataset_name, card_template)
    (export_dir / "README.md").write_text(card, encoding="utf-8")
    return datasets.DatasetDict(result)


def render_card(config: SynthesisConfig, summary: dict, configs: list[str], counts: dict[str, int], dataset_name: str,
                template: str | os.PathLike | None = None) -> str:  # fmt: skip
    """The dataset card (YAML header with one config per task + description)."""
    path = Path(template) if template else CARD_TEMPLATE
    if not path.is_file():
        raise FileNotFoundError(f"Dataset card template {str(path)!r} not found; pass card_template= (default: mm_st.hub_cards).")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(path.read_text(encoding="utf-8")).render(
        name=dataset_name, config=config, summary=summary, configs=configs, counts=counts,
        total=sum(counts.values()), languages=sorted(summary["per_language"]),
    )  # fmt: skip


def push_to_hub(export_dir: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None,
                endpoint: str | None = None) -> str:
    """Upload an export directory as a dataset repo, in one commit, through :func:`mm_st.hub.push_folder` (token:
    argument or the usual ``HF_TOKEN`` / login, never written anywhere; errors are redacted ``mm_st.hub.PushError``).
    Returns the repo URL."""
    from mm_st.hub import push_folder  # the publishing layer (imported here: it sits above synthesis)

    return push_folder(export_dir, repo_id, repo_type="dataset", private=private, token=token, endpoint=endpoint,
                       commit_message="Upload mmE5-style synthetic data")


__all__ = ["export_dataset", "push_to_hub", "render_card", "JOURNAL", "SUMMARY"]
