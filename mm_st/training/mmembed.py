"""MM-Embed's recipe (arXiv 2411.02571): three stages on M-BEIR, each a :func:`~mm_st.training.run_stage`.

1. **Random negatives**: M-BEIR training queries with their task instruction in the row (rendered as
   ``Instruct: {instruction}\\nQuery: `` by the ``mmembed`` template), in-batch negatives only; MM-Embed's
   modality term (``--modality-weight``) available.
2. **Modality-aware hard negatives**: the stage-1 model mines each training query's candidates from its
   dataset's candidate pool (:func:`mm_st.mining.mine_hard_negatives` with ``strategy="modality_aware"``:
   type-1 = wrong-modality candidates ranked above the positive, type-2 = right-modality candidates at
   ranks 46-50), the mined rows are saved under ``<output_dir>/mined-negatives/`` (reused when the stage-1
   model and data are the same), and training starts again FROM THE BASE MODEL with them.
3. **Continual text-to-text fine-tuning** from the stage-2 model (its ``model/`` folder, adapter-only
   or full) on text retrieval pairs (``--text-data``), mixed with a share of the M-BEIR rows.

``<output_dir>/stage{1,2,3}/`` are ordinary stage folders (resumable, re-runs of a finished stage do
nothing); ``<output_dir>/stages.json`` records what ran (config, data fingerprints, steps, scores).
``--stages 2,3`` runs some stages (the earlier ones must have finished); ``--from-stage 2`` runs stage 2
and the later ones again from scratch. After each stage the held-out M-BEIR tasks are scored (Recall
and the wrong-modality top-1 rate), and the end prints every stage next to the untrained model and chance.
Without ``--eval-data`` these are a seeded share of each task's training queries (``--held-out-share``), written
to ``<output_dir>/held-out/`` and never trained on or mined (:mod:`mm_st.training.heldout`).

By default the recipe uses MM-Embed's prompt format with last-token pooling and causal attention (portable:
plain ``SentenceTransformer(path)`` loads it); ``--pooling latent_attention --attention bidirectional`` builds
MM-Embed's NV-Embed-style model (:mod:`mm_st.latent_attention`; loading needs ``trust_remote_code=True``).

Example:
    >>> from mm_st.training import MMEmbedConfig
    >>> MMEmbedConfig().ranks(), MMEmbedConfig().text_learning_rate, MMEmbedConfig().batch_mixing
    ((46, 50), 2e-05, 'mixed')
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets

from mm_st.builder import ATTENTIONS, POOLINGS
from mm_st.data.converters import MBEIR_REPO
from mm_st.hub import CARD_STAGES
from mm_st.training import console, embedded
from mm_st.training.config import (AT_LEAST_1, EMBEDDED_COMMON, NON_NEGATIVE, POSITIVE, SHARE, VISION_TOWER_HELP, Range,
                                   RecipeConfig, _f)
from mm_st.training.data import Sources, cap, check_not_empty, embedded_dir, training_dataset

logger = logging.getLogger(__name__)

MMEMBED = "MM-Embed (arXiv 2411.02571)"
PAPER_FACTS = "MM-Embed paper, as recorded in the project's paper facts"
UNIIR = ("TIGER-AI-Lab/UniIR @98dc570 (M-BEIR's reference training code): trains on the union of all M-BEIR "
         "tasks (query/union_train/mbeir_union_up_train.jsonl) with a shuffled sampler, so every batch mixes tasks; "
         "MM-Embed's own batch composition is not in its public sources")
NOT_PUBLIC = "mm_st default: MM-Embed released no training code and its paper gives no value we could read"
NV_RETRIEVER = ("NV-Retriever (arXiv 2407.15831): TopK-PercPos, a negative must score below 95% of the positive's "
                "score, its best setting; sentence-transformers' mine_hard_negatives(relative_margin=0.05)")
TEXT_INSTRUCTION = "Retrieve the text that matches the given text."  # mm_st default for pairs without one


@dataclass
class MMEmbedConfig(RecipeConfig):
    """MM-Embed: M-BEIR with random negatives, then modality-aware hard negatives from the base model, then
    continual text-to-text fine-tuning (see the module docstring)."""

    recipe: ClassVar[str] = "mmembed"
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "global_batch_size": 32, "max_steps": 250, "text_steps": 120, "text_learning_rate": 5e-4,
        "max_rows_per_dataset": None, "save_steps": 100, "logging_steps": 25,
    }
    data_fields: ClassVar[tuple[str, ...]] = ("data", "text_data")
    stage: ClassVar[int] = 0  # the stages' own classes set 1, 2, 3; 0 = the whole recipe
    stage_table: ClassVar[bool] = False  # each stage prints one line; the end prints every stage's table

    model: str | None = _f(None, MMEMBED + ": LLaVA-NeXT's vision side on NV-Embed-v1 (nvidia/MM-Embed, remote code "
                           "only); any MLLM of mm_st's families here")
    tiny_family: str = _f("llava_next", MMEMBED + ": a LLaVA-NeXT backbone")
    prompt_format: str = _f("inference", "mm_st.templates: MM-Embed's format (no training code is public)")
    data: str | None = _f(None, MMEMBED + ": M-BEIR training data (" + MBEIR_REPO + "), a local copy of its layout")
    data_split: str = _f("train", "M-BEIR: query/train", "query/<split>/ to train on: train (M-BEIR's per-dataset "
                         "files) or union_train (UniIR's mbeir_union_up_train.jsonl); pools named for another split "
                         "(val, test) are never read nor mined")
    eval_data: str | None = _f(None, "mm_st", "M-BEIR-layout root whose test split is evaluated (embedded: the held-out "
                                "emoji tasks)")
    eval_tasks: list[str] = _f([], "mm_st", "mm_st M-BEIR task names to evaluate (default: every task of eval_data, "
                               "and its union-pool tasks global-<task> when it has "
                               "cand_pool/global/mbeir_union_test_cand_pool.jsonl)")
    held_out_share: float = _f(0.05, "mm_st default", "without --eval-data: share of each task's training queries "
                               "held out (at least 20, at most 1000 and a fifth of the task; written to "
                               "<output_dir>/held-out/, never trained on or mined) to score every stage on; 0 = none",
                               SHARE)
    stages: list[str] = _f(["1", "2", "3"], MMEMBED + ": three stages", "stages to run (the earlier ones must have finished)")
    from_stage: int = _f(0, "mm_st", "run this stage and the later ones again from scratch (0 = resume / skip "
                         "finished stages)", Range(0, 3))
    mining_model: str | None = _f(None, MMEMBED + ": the stage-1 retriever mines", "model that mines stage 2's negatives "
                                  "(default: stage 1's model)")
    mined_negatives: str | None = _f(None, "mm_st", "folder of stage 2's mined negatives (parquet + mining.json; default "
                                     "<output_dir>/mined-negatives): reused when miner, data and settings match")
    batch_mixing: str = _f("mixed", UNIIR, "'mixed' (tasks share a batch) or 'per_dataset' (one task per batch)")
    num_negatives: int = _f(1, NOT_PUBLIC + " (one mined negative per query)", "mined negatives per query (stage 2)",
                            AT_LEAST_1)
    mining_ranks: list[str] = _f(["46", "50"], PAPER_FACTS + " (type-2 window; 'best public account')",
                                 "type-2 negatives: right-modality candidates at these ranks (first,last)")
    mining_top_k: int = _f(50, PAPER_FACTS + ": top 50 candidates per training query", "type-1 search depth", AT_LEAST_1)
    mining_relative_margin: float | None = _f(
        0.05, NV_RETRIEVER, "stage-2 mining: a right-modality candidate scoring above positive - |positive| x this "
        "is a likely false negative (e.g. another image of the query's category), never a negative; ranks count the "
        "candidates left (none = off)", NON_NEGATIVE)
    mining_absolute_margin: float | None = _f(
        None, "NV-Retriever's TopK-MarginPos (off: the relative form was its best); sentence-transformers' "
        "absolute_margin", "stage-2 mining: candidates scoring above positive - this are never negatives (none = off)",
        NON_NEGATIVE)
    mining_max_score: float | None = _f(None, "sentence-transformers' mine_hard_negatives max_score",
                                        "stage-2 mining: candidates scoring above this are never negatives (none = off)",
                                        Range())
    max_unmined_share: float = _f(0.05, "mm_st", "warn (console, stages.json) when stage-2 mining finds no negative "
                                  "for more than this share of a task's rows; name a task on the console (and in "
                                  "mining.json) when more than this share took a fallback negative", SHARE)
    max_score_drop: float = _f(0.05, "mm_st", "warn (console, stages.json) when a stage lowers a held-out task's "
                               "top-1 score (hit_rate_at_1: the top-1 candidate is relevant) by more than this against "
                               "the model it started from and the earlier stages",
                               NON_NEGATIVE)
    modality_weight: float = _f(0.0, "mm_st option (MM-Embed's mechanism is the mined negatives)",
                                "weight of the modality term of the loss (mm_st.losses)", NON_NEGATIVE)
    pooling: str = _f("lasttoken", "mm_st default: portable (no trust_remote_code) and level on Recall@1 in "
                      "benchmarks/mmembed_pooling.py; MM-Embed pools with NV-Embed's latent attention over the "
                      "non-instruction tokens ('latent_attention')", "'lasttoken' or 'latent_attention'")
    attention: str = _f("causal", "mm_st default; MM-Embed's language model (NV-Embed) is bidirectional",
                        "'causal' or 'bidirectional' (with an adapter only together with latent_attention)")
    text_data: str | None = _f(None, MMEMBED + ": public text retrieval sets (stage 3)", "stage-3 text pairs: a jsonl/csv/"
                               "parquet file of query, positive[, negative], or a Hub dataset")
    text_instruction: str = _f(TEXT_INSTRUCTION, "mm_st default", "instruction of stage-3 pairs that carry none")
    text_steps: int = _f(4500, PAPER_FACTS + ": ~4.5K steps", "stage-3 optimizer steps", AT_LEAST_1)
    text_learning_rate: float = _f(2e-5, PAPER_FACTS + ": lr 2e-5", "stage-3 learning rate", POSITIVE)
    multimodal_share: float = _f(0.5, MMEMBED + " mixes M-BEIR into stage 3 (share: " + NOT_PUBLIC + ")",
                                 "share of stage-3 rows drawn from the M-BEIR training rows", SHARE)
    temperature: float = _f(0.02, NOT_PUBLIC)
    learning_rate: float = _f(2e-5, NOT_PUBLIC)
    max_steps: int = _f(2000, NOT_PUBLIC + " (stages 1 and 2 each)")
    global_batch_size: int = _f(128, NOT_PUBLIC)
    mini_batch_size: int = _f(8, "mm_st: GradCache mini-batches for the large batch")
    adapter: str = _f("lora", NOT_PUBLIC + " (LoRA on the language model and vision tower)")
    lora_r: int = _f(16, NOT_PUBLIC)
    lora_alpha: int = _f(32, NOT_PUBLIC)
    lora_dropout: float = _f(0.1, NOT_PUBLIC)
    vision_tower: str = _f("lora", NOT_PUBLIC + " (LoRA on the vision tower, as on the language model)",
                           VISION_TOWER_HELP)
    max_length: int | None = _f(512, NOT_PUBLIC)

    def validate(self) -> None:
        super().validate()
        numbers = self.stage_numbers()
        if self.pooling not in POOLINGS:
            raise ValueError(f"mmembed config: pooling={self.pooling!r} is not one of {', '.join(POOLINGS)}.")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"mmembed config: attention={self.attention!r} is not one of {', '.join(ATTENTIONS)}.")
        if self.attention == "bidirectional" and self.adapter != "none" and self.pooling == "lasttoken":
            raise ValueError("mmembed config: attention='bidirectional' with an adapter needs pooling='latent_attention' "
                             "(an adapter-only folder reloads its base's causal config); or train full weights.")
        first, last = self.ranks()
        if not 1 <= first <= last:
            raise ValueError(f"mmembed config: mining_ranks must be first,last with 1 <= first <= last, got {self.mining_ranks}.")
        if self.model is not None and self.data is None and numbers != [3]:
            raise ValueError("mmembed config: --model is set but --data is not; give the M-BEIR training data too.")
        if self.model is not None and 3 in numbers and self.text_data is None:
            raise ValueError("mmembed config: stage 3 needs --text-data (text retrieval pairs); or run --stages 1,2.")

    def stage_numbers(self) -> list[int]:
        try:
            numbers = sorted({int(s) for s in self.stages})
        except ValueError:
            numbers = []
        if not numbers or not set(numbers) <= {1, 2, 3}:
            raise ValueError(f"mmembed config: stages must be some of 1, 2, 3, got {self.stages}.")
        if self.from_stage and self.from_stage not in numbers:
            raise ValueError(f"mmembed config: --from-stage {self.from_stage} is not among --stages "
                             f"{','.join(map(str, numbers))}; run again from one of the chosen stages, or choose "
                             f"--stages {','.join(str(n) for n in (1, 2, 3) if n >= self.from_stage)}.")
        if self.from_stage:
            numbers = [n for n in (1, 2, 3) if n >= self.from_stage and (n in numbers or n > self.from_stage)]
        return numbers

    def negatives_per_row(self) -> int:
        """Stage 2's mined negatives; stages 1 and 3 train on in-batch negatives only (whatever num_negatives says)."""
        numbers = [self.stage] if self.stage else self.stage_numbers()
        return self.num_negatives if numbers == [2] else 0

    def why_no_negatives(self) -> str:
        numbers = [self.stage] if self.stage else self.stage_numbers()
        others = [str(n) for n in numbers if n != 2]
        return (f"stage{'s' if len(others) > 1 else ''} {' and '.join(others)} train{'' if len(others) > 1 else 's'} "
                "on in-batch negatives only")

    def ranks(self) -> tuple[int, int]:
        try:
            first, last = (int(r) for r in self.mining_ranks)
        except (TypeError, ValueError):
            raise ValueError(f"mmembed config: mining_ranks must be two integers first,last, got {self.mining_ranks}.") from None
        return first, last

    def loss_options(self) -> dict[str, Any]:
        return {"modality_weight": self.modality_weight} if self.modality_weight else {}

    def model_options(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "attention": self.attention}

    # -- the recipe: its stages -----------------------------------------------------------------------

    def run(self) -> Any:
        """Run the chosen stages (see the module docstring); the last stage's result."""
        return MMEmbedRun(self).run()

    def plan_lines(self) -> list[str]:
        """What ``--dry-run`` prints: each chosen stage's checked plan."""
        return MMEmbedRun(self).plan_lines()


# -- the three stages: each its own config class (data, preparation), run by the shared stage runner ------------


@dataclass
class RandomNegativesStage(MMEmbedConfig):
    """Stage 1: M-BEIR with the task instruction in each query row; in-batch negatives only."""

    stage: ClassVar[int] = 1

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        return Sources(self.data, None, self.eval_data)

    def check_sources(self, sources: Sources) -> None:
        super().check_sources(sources)
        from mm_st.io import is_local

        if is_local(sources.data) and not (Path(sources.data) / "query" / self.data_split).is_dir():
            raise FileNotFoundError(f"mmembed: {str(Path(sources.data) / 'query' / self.data_split)!r} not found: --data "
                                    "must be an M-BEIR root (query/<split>/*.jsonl, cand_pool/, instructions/).")

    def load_mbeir(self, sources: Sources, ids: bool = False) -> dict[str, datasets.Dataset]:
        """The training tasks, less the queries held out of this run (:mod:`mm_st.training.heldout`), capped."""
        from mm_st.data import load_mbeir
        from mm_st.training.heldout import held_out_qids, without_held_out

        held_out = held_out_qids(sources.eval_data)
        named = load_mbeir(sources.data, split=self.data_split, instructions="row", on_missing=self.on_missing,
                           seed=self.seed, ids=ids or bool(held_out))
        if held_out:
            named = {name: without_held_out(ds, held_out) for name, ds in named.items()}
            if not ids:
                named = {name: ds.remove_columns(["qid", "positive_id"]) for name, ds in named.items()}
        return {name: cap(ds, self.max_rows_per_dataset) for name, ds in named.items()}

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        named = self.load_mbeir(sources)
        check_not_empty(named, "mmembed")
        return named

    def source_lines(self, sources: Sources) -> list[str]:
        from mm_st.training.heldout import held_out_qids

        held_out = len(held_out_qids(sources.eval_data))
        return [f"stage {self.stage}: {STAGE_TITLES[self.stage]}",
                f"reads: M-BEIR {sources.data} (split {self.data_split}); each query row carries its task's instruction"
                + (f"; {held_out} held-out queries left out" if held_out else "")]

    def evaluator(self, sources: Sources, results_dir: Path) -> Any:
        if not sources.eval_data:
            return None
        from mm_st.evaluation.mbeir_global import eval_task_names
        from mm_st.training.evaluators import MBEIREvaluator

        tasks = self.eval_tasks or eval_task_names(sources.eval_data)  # with a union pool: its tasks too
        return MBEIREvaluator(sources.eval_data, tasks, results_dir, f"mm_st-mmembed-stage{self.stage}")


@dataclass
class ModalityAwareStage(RandomNegativesStage):
    """Stage 2: negatives mined by the stage-1 model (modality-aware), trained from the base model."""

    stage: ClassVar[int] = 2

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        named = self.load_mbeir(sources, ids=True)
        check_not_empty(named, "mmembed")
        self.candidate_pools()  # every pool image checked once, in the dry run too
        return named

    def candidate_pools(self) -> dict[str, list[dict]]:
        """The training split's candidate pools by dataset id, each image checked once (read once per stage)."""
        if getattr(self, "_pools", None) is None:
            from mm_st.data.converters import mbeir_candidate_pools

            self._pools, self._pools_dropped = mbeir_candidate_pools(self.data, self.data_split, self.on_missing)
        return self._pools

    def plan_notes(self, named: dict[str, datasets.Dataset]) -> list[str]:
        check_shared_negatives(self, mining_key(self, list(named), miner=False))  # in the plan, before stage 1 trains
        first, last = self.ranks()
        dropped = getattr(self, "_pools_dropped", 0)
        lines = [f"mining pool: {dropped} candidate(s) with a missing or unreadable image dropped (--on-missing skip)"]
        return [self.mined_files_line()] + lines[:1 if dropped else 0] + [
            f"negatives: {self.num_negatives} per query, mined by {self.mining_model} from each task's candidate pool "
            f"(type-1: wrong modality above the positive within the top {self.mining_top_k}; type-2: right modality "
            f"at ranks {first}-{last}); saved in {self.mined_negatives or '<output>/mined-negatives'} and reused",
            f"false-negative filter: {self.filter_line()}; every listed positive (pos_cand_list) and content "
            "duplicates of the positive are excluded; a query short of negatives takes the candidate nearest the "
            "window (rows are never dropped silently)"]

    def mined_files_line(self) -> str:
        """Which pool files stage 2 mines, and which it never reads (named for another split)."""
        from mm_st.data.mbeir import file_list, mbeir_pool_files, mbeir_root

        root = mbeir_root(self.data)
        mined = mbeir_pool_files(root, self.data_split)
        others = [p for p in sorted((root / "cand_pool").rglob("*.jsonl")) if p not in mined]
        kept_out = f"; not mined (named for another split): {file_list(root, others)}" if others else ""
        return f"mined pools (split {self.data_split}): {file_list(root, mined)}{kept_out}"

    def filter_line(self, short: bool = False) -> str:
        """The false-negative filter's settings (``short``: without what the relative margin means)."""
        meaning = (f" (right-modality candidates above {1 - self.mining_relative_margin:.0%} of the positive's score "
                   "are no negatives)" if self.mining_relative_margin is not None and not short else "")
        parts = [f"relative_margin {self.mining_relative_margin:g}{meaning}"
                 if self.mining_relative_margin is not None else "",
                 f"absolute_margin {self.mining_absolute_margin:g}" if self.mining_absolute_margin is not None else "",
                 f"max_score {self.mining_max_score:g}" if self.mining_max_score is not None else ""]
        return ", ".join(p for p in parts if p) or "off"

    def mining_filters(self) -> dict[str, float | None]:
        """The false-negative filter as :func:`mm_st.mining.mine_hard_negatives` arguments."""
        return {"relative_margin": self.mining_relative_margin, "absolute_margin": self.mining_absolute_margin,
                "max_score": self.mining_max_score}

    def earlier_before_scores(self) -> list[Path]:
        return [Path(self.output_dir).parent / "stage1" / "eval-before.json"]  # stage 1 started from the same base

    def prepare(self, model: Any, named: dict[str, datasets.Dataset], plan: Any) -> dict[str, datasets.Dataset]:
        from mm_st.training.distributed import main_process_first

        with main_process_first():  # the main process mines and saves; the others read what it saved
            named = mined_negatives(self, named, plan)
        check_not_empty(named, "mmembed")
        return super().prepare(model, named, plan)


@dataclass
class TextStage(RandomNegativesStage):
    """Stage 3: continual text-to-text fine-tuning from the stage-2 model, with a share of M-BEIR rows."""

    stage: ClassVar[int] = 3

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        return Sources(self.data, None, self.eval_data, extra={"text_data": self.text_data})

    def check_sources(self, sources: Sources) -> None:
        if self.multimodal_share > 0:
            super().check_sources(sources)
        elif sources.eval_data and not Path(sources.eval_data).is_dir():
            raise FileNotFoundError(f"mmembed config: eval_data {sources.eval_data!r} is not a directory.")

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        from mm_st.data import load_text_pairs

        text = cap(load_text_pairs(sources.extra["text_data"], instruction=self.text_instruction), self.max_rows_per_dataset)
        named = {"text-pairs": text}
        share = self.multimodal_share
        if share > 0 and len(text):
            wanted = round(len(text) * share / (1 - share))
            mbeir = self.load_mbeir(sources)
            total = sum(len(ds) for ds in mbeir.values())
            rng = random.Random(self.seed)
            for name, ds in mbeir.items():
                count = min(len(ds), round(wanted * len(ds) / total))
                if count:
                    named[name] = ds.select(sorted(rng.sample(range(len(ds)), count)))
        check_not_empty(named, "mmembed")
        return named

    def source_lines(self, sources: Sources) -> list[str]:
        return [f"stage 3: {STAGE_TITLES[3]}",
                f"reads: text pairs {sources.extra['text_data']}"
                + (f" + {self.multimodal_share:.0%} of the rows from M-BEIR {sources.data}" if self.multimodal_share else "")]


STAGE_TITLES = {1: "random in-batch negatives on M-BEIR",
                2: "modality-aware hard negatives, trained from the base model",
                3: "continual text-to-text fine-tuning from the stage-2 model"}
STAGES: dict[int, type[MMEmbedConfig]] = {1: RandomNegativesStage, 2: ModalityAwareStage, 3: TextStage}


# -- stage 2's mining -------------------------------------------------------------------------------------------


def _listed_positives(root: Path, split: str) -> dict[str, list[str]]:
    """Each training query's ``pos_cand_list`` by qid (every listed positive is excluded from its negatives)."""
    from mm_st.data.mbeir import mbeir_query_files, query_rows

    listed: dict[str, list[str]] = {}
    for path in mbeir_query_files(root, split):
        for entry in (row.data for row in query_rows(path)):
            ids = entry.get("pos_cand_list")
            if isinstance(entry.get("qid"), str) and isinstance(ids, list):
                listed.setdefault(entry["qid"], []).extend(d for d in ids if isinstance(d, str))
    return listed


def _fingerprint(paths: list[Path]) -> str:
    """sha256 of files' names and bytes (data a stage read)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def mbeir_fingerprint(root: str, split: str) -> str:
    """What an M-BEIR root's ``split`` holds (query files, the split's pool files and instructions), or the Hub id."""
    from mm_st.data.mbeir import mbeir_pool_files, mbeir_query_files
    from mm_st.io import is_local

    if not is_local(root):
        return f"hub:{root}"
    base = Path(root)
    files = [*mbeir_query_files(base, split), *mbeir_pool_files(base, split),
             *(base / "instructions").glob("*.tsv")]
    return _fingerprint(files)


def model_fingerprint(folder: str) -> str:
    """What a saved model folder's weights are (safetensors files)."""
    files = list(Path(folder).glob("*.safetensors"))
    return _fingerprint(files) if files else f"model:{folder}"


def _window(pool: list[dict], positive_modality: str, ranks: tuple[int, int]) -> tuple[int, int]:
    """The type-2 rank window, moved up when the pool holds fewer right-modality candidates than its last rank."""
    first, last = ranks
    available = sum(1 for entry in pool if entry.get("modality") == positive_modality) - 1
    if available >= last:
        return first, last
    width = last - first
    return max(1, available - width), max(1, available)


MINED_FORMAT = 2  # image paths relative to the M-BEIR root (format 1: absolute or working-directory-relative paths)
KEY_NAMES = {"miner": "the mining model's weights", "data": "the M-BEIR data"}


def mining_key(stage: ModalityAwareStage, tasks: list[str], miner: bool = True) -> dict[str, Any]:
    """What a set of mined negatives depends on (``mining.json``'s ``key``); ``miner=False`` leaves out the
    mining model (in the plan, before stage 1 has written it)."""
    from mm_st.training.heldout import held_out_fingerprint

    key = {"format": MINED_FORMAT, "data": mbeir_fingerprint(stage.data, stage.data_split), "ranks": list(stage.ranks()),
           "top_k": stage.mining_top_k, "num_negatives": stage.num_negatives, "tasks": sorted(tasks),
           "max_rows_per_dataset": stage.max_rows_per_dataset, **stage.mining_filters(), "fallback": "nearest",
           "excludes": "pos_cand_list"}
    held_out = held_out_fingerprint(stage.eval_data)
    if held_out:  # the training queries mined for: the held-out ones are not among them
        key["held_out"] = held_out
    return {"miner": model_fingerprint(stage.mining_model), **key} if miner else key


def shared_negatives(stage: ModalityAwareStage) -> Path | None:
    """The folder ``--mined-negatives`` points at (read, never rewritten), None for the recipe's own folder."""
    if not stage.mined_negatives:
        return None
    folder = Path(stage.mined_negatives)
    own = Path(stage.output_dir).parent / "mined-negatives"
    return None if folder.resolve() == own.resolve() else folder


def check_shared_negatives(stage: ModalityAwareStage, key: dict[str, Any]) -> None:
    """A ``--mined-negatives`` folder holding a set mined with other settings (those in ``key``), or files that are
    no such set, is an error naming what differs; nothing in it is changed."""
    folder = shared_negatives(stage)
    if folder is None:
        return
    record = folder / "mining.json"
    advice = ("a folder --mined-negatives points at is read, never rewritten: leave --mined-negatives out to mine into "
              "this run's own folder, or point it at a set mined with these settings")
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8")).get("key", {})
        differing = {k: (saved.get(k), v) for k, v in key.items() if saved.get(k) != v}
        if differing:
            details = "; ".join(f"{KEY_NAMES.get(k, k)}: {a!r} in the folder, {b!r} for this run"
                                for k, (a, b) in differing.items())
            raise ValueError(f"mmembed stage 2: --mined-negatives {str(folder)!r} holds negatives mined with other "
                             f"settings ({details}); {advice}.")
    elif folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"mmembed stage 2: --mined-negatives {str(folder)!r} holds files but no mining.json (not a set "
                         f"of mined negatives, or one whose mining was stopped); {advice}, or an empty or new folder.")


def _change_images(table: Any, change: Any) -> Any:
    """``table`` (pyarrow) with ``change(path)`` applied to the image path of every input column (the ``image``
    field, a path or datasets' ``{bytes, path}`` image struct)."""
    import pyarrow as pa

    def changed(values: Any) -> Any:
        kind = values.type
        if pa.types.is_struct(kind):
            fields = [changed(values.field(i)) if kind.field(i).name == "path" else values.field(i)
                      for i in range(kind.num_fields)]
            return pa.StructArray.from_arrays(fields, fields=list(kind), mask=values.is_null())
        return pa.array([change(path) if path else path for path in values.to_pylist()], type=kind)

    for index, column in enumerate(table.column_names):
        kind = table.schema.field(column).type
        if not (pa.types.is_struct(kind) and kind.get_field_index("image") >= 0):
            continue
        values = table.column(column).combine_chunks()
        fields = [changed(values.field(i)) if kind.field(i).name == "image" else values.field(i)
                  for i in range(kind.num_fields)]
        rebuilt = pa.StructArray.from_arrays(fields, fields=list(kind), mask=values.is_null())
        table = table.set_column(index, table.schema.field(column), rebuilt)
    return table


def save_mined(ds: datasets.Dataset, path: Path, root: Path) -> None:
    """Mined rows as parquet, image paths relative to the M-BEIR root (a set shared with another run, folder or
    machine reads its images from that run's own copy of the data, which ``mining.json``'s fingerprint matches)."""
    import pyarrow.parquet as pq

    base = root.resolve()
    pq.write_table(_change_images(ds.flatten_indices().data.table, lambda p: Path(p).relative_to(base).as_posix()),
                   str(path))


def read_mined(path: Path, root: Path) -> datasets.Dataset:
    """Mined rows saved by :func:`save_mined`, each image path resolved inside this run's M-BEIR root."""
    import pyarrow.parquet as pq

    from mm_st.io import resolve_inside

    where = f"{str(path)!r}"
    return datasets.Dataset(_change_images(pq.read_table(str(path)), lambda p: str(resolve_inside(root, p, where))))


def mined_negatives(stage: ModalityAwareStage, named: dict[str, datasets.Dataset], plan: Any) -> dict[str, datasets.Dataset]:
    """Each task's rows with ``num_negatives`` modality-aware negatives mined by ``stage.mining_model``, saved as
    parquet in ``stage.mined_negatives`` (the recipe's ``<output_dir>/mined-negatives/``, outside the stage's own
    folder, so that starting stage 2 over keeps them) with ``mining.json`` (what they were mined from and, per task,
    the counts: negatives by type, candidates filtered as likely false negatives, rows without a negative): a
    re-run with the same miner, data and settings reads them instead of mining again. A folder the user points at
    (``--mined-negatives DIR``) is read when it matches, mined into when it is new or empty, never rewritten."""
    from mm_st.data.mbeir import mbeir_root
    from mm_st.training.distributed import is_main_process

    folder = Path(stage.mined_negatives) if stage.mined_negatives else plan.work_dir("mined-negatives")
    root = mbeir_root(stage.data)  # a local root, or the Hub snapshot
    key = mining_key(stage, list(named))
    record = folder / "mining.json"
    saved = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    if saved.get("key") == key:
        logger.info("stage 2: reusing the mined negatives in %s", folder)
        report_mining(stage, saved["counts"])
        return {name: read_mined(folder / f"{name}.parquet", root) for name in sorted(named)}
    check_shared_negatives(stage, key)
    if shared_negatives(stage) is not None and is_main_process():
        print(f"stage 2: mining into {str(folder)!r} (--mined-negatives: a new folder, shared from now on)", flush=True)
    if not is_main_process():
        raise RuntimeError(f"rank {os.environ.get('RANK')}: the main process did not save the mined negatives of this "
                           f"run in {str(folder)!r} ({record.name} is missing or records other inputs).")
    folder.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    miner = plan.load_model(stage.mining_model)
    pools = stage.candidate_pools()
    listed = _listed_positives(root, stage.data_split)
    out, counts = {}, {}
    for name, ds in named.items():
        mined, counts[name] = _mine_task(stage, name, ds, pools, listed, miner, plan)
        save_mined(mined, folder / f"{name}.parquet", root)
        out[name] = read_mined(folder / f"{name}.parquet", root)
    record.write_text(json.dumps({"key": key, "counts": counts}, indent=2) + "\n", encoding="utf-8")
    report_mining(stage, counts)
    return out


def _mine_task(stage: ModalityAwareStage, name: str, ds: datasets.Dataset, pools: dict[str, list[dict]],
               listed: dict[str, list[str]], miner: Any, plan: Any) -> tuple[datasets.Dataset, dict[str, Any]]:
    """One task's mined rows and its counts for ``mining.json``."""
    from mm_st.mining import mine_hard_negatives

    dataset_id = ds[0]["qid"].split(":")[0]
    pool = pools.get(dataset_id)
    if not pool:
        from mm_st.data.mbeir import mbeir_root

        raise ValueError(f"mmembed stage 2: task {name} has no candidate pool for dataset id {dataset_id!r} in the "
                         f"pool files of split {stage.data_split!r} under {str(mbeir_root(stage.data) / 'cand_pool')!r} "
                         "(the plan's 'mined pools' line names them).")
    corpus = [{"text": e.get("txt") or None, "image": e["image"]} for e in pool]  # images checked inside the root
    pool_ids = {e["did"] for e in pool}
    others = [[d for d in listed.get(qid, []) if d in pool_ids and d != first]
              for qid, first in zip(ds["qid"], ds["positive_id"])]
    positive_modality = next(e.get("modality") for e in pool if e["did"] == ds[0]["positive_id"])
    ranks = _window(pool, positive_modality, stage.ranks())
    mined, report = mine_hard_negatives(
        miner, list(ds["anchor"]), corpus, list(ds["positive_id"]), other_positives=others,
        corpus_ids=[e["did"] for e in pool], strategy="modality_aware", ranks=ranks, top_k=stage.mining_top_k,
        num_negatives=stage.num_negatives, fallback="nearest", **stage.mining_filters(),
        cache_dir=plan.work_dir("mining-cache"), return_report=True,  # one cache: the shared pool is encoded once
        show_progress_bar=console.library_bars())
    kinds = [kind for row in report.negative_type for kind in row]
    counts = {"rows": len(mined), "of": len(ds), "type1": kinds.count("type1"), "type2": kinds.count("type2"),
              "fallback": kinds.count("fallback"), "fallback_rows": len(report.fallback_queries),
              "fallback_rows_filtered": sum(1 for q in report.fallback_queries if report.filtered[q]),
              "dropped": len(report.dropped_queries), "filtered_false_negatives": report.margin_removed,
              "queries_with_filtered": sum(1 for f in report.filtered if f), "type2_ranks": list(ranks)}
    return mined, {**counts, "fallback_note": fallback_note(stage, name, counts)}


def fallback_note(stage: ModalityAwareStage, name: str, c: dict[str, Any]) -> str | None:
    """A line for a task where more than ``max_unmined_share`` of the rows found no candidate in the type-2
    window and took the nearest one above it (kept, but not the negative the window asks for), with the reason."""
    share = c["fallback_rows"] / max(c["of"], 1)
    if share <= stage.max_unmined_share:
        return None
    low, high = c["type2_ranks"]
    reasons = [f"for {c['fallback_rows_filtered']} of them the false-negative filter ({stage.filter_line(short=True)}) "
               "removed the window's candidates" if c["fallback_rows_filtered"] else "",
               f"{c['fallback_rows'] - c['fallback_rows_filtered']} had too few right-modality candidates besides their "
               f"positives in the top {stage.mining_top_k}" if c["fallback_rows"] > c["fallback_rows_filtered"] else ""]
    return (f"stage 2, {name}: {c['fallback_rows']} of {c['of']} rows ({share:.0%}) had no candidate at ranks "
            f"{low}-{high} and took the nearest one above them: " + "; ".join(r for r in reasons if r))


def _unmined_warnings(stage: MMEmbedConfig, counts: dict[str, dict[str, Any]]) -> list[str]:
    """A warning per task whose mining left more than ``max_unmined_share`` of its rows without a negative."""
    out = []
    for name, c in counts.items():
        share = c["dropped"] / max(c["of"], 1)
        if share > stage.max_unmined_share:
            out.append(f"warning: stage 2 lost {share:.0%} of task {name}'s rows ({c['dropped']} of {c['of']}; more "
                       f"than max_unmined_share {stage.max_unmined_share:g}): no negative is left in its pool "
                       "after the exclusions and the filter; lower --mining-relative-margin or add candidates")
    return out


def score_drops(before: dict[str, float], after: dict[str, float], earlier: dict[str, dict[str, Any]], n: int,
                threshold: float) -> list[str]:
    """Warnings for each held-out task whose top-1 score (``hit_rate_at_1``: the top-1 candidate is relevant;
    Recall@1 where it is missing) after stage ``n`` is more than ``threshold`` below the model the stage started
    from or below an earlier stage's model (``earlier``: ``stages.json``'s stages)."""
    from mm_st.training.evaluators import TOP1_METRIC

    references = [("its start", before)] + [(f"stage {m}", earlier[str(m)].get("after") or {})
                                            for m in range(1, n) if str(m) in earlier]
    tasks = sorted({key.split("/")[1] for key in after if key.startswith("mbeir/")})
    out = []
    for task in tasks:
        metric = TOP1_METRIC if f"mbeir/{task}/{TOP1_METRIC}" in after else "recall_at_1"
        key = f"mbeir/{task}/{metric}"
        if key not in after:
            continue
        drops: dict[float, list[str]] = {}  # one warning per score: its start is often an earlier stage's model
        for label, scores in references:
            previous = scores.get(key)
            if previous is not None and previous - after[key] > threshold:
                drops.setdefault(previous, []).append(label)
        for previous, labels in drops.items():
            out.append(f"warning: stage {n} lowered {task} {metric} against {' = '.join(labels)}: {previous:.3f} -> "
                       f"{after[key]:.3f} (more than max_score_drop {threshold:g})")
    return out


def report_mining(stage: ModalityAwareStage, counts: dict[str, dict[str, Any]]) -> list[str]:
    """Print each task's mining line, and a warning for every task that lost rows; the warnings (also in
    ``stages.json`` through :meth:`MMEmbedRun.record`)."""
    from mm_st.training.distributed import is_main_process

    lines = []
    for name, c in counts.items():
        lines.append(f"stage 2, {name}: {c['rows']} of {c['of']} rows mined ({c['type1']} type-1, {c['type2']} type-2 "
                     f"at ranks {c['type2_ranks'][0]}-{c['type2_ranks'][1]}, {c['fallback']} nearest-the-window "
                     f"fallback); {c['filtered_false_negatives']:,} candidates filtered as likely false negatives")
        if c["dropped"]:
            lines.append(f"stage 2, {name}: {c['dropped']} of {c['of']} rows dropped: no candidate besides the "
                         "positives, their duplicates and the filtered ones is left in the task's pool")
        if c.get("fallback_note"):  # mining.json of older runs has none
            lines.append(c["fallback_note"])
    warnings = _unmined_warnings(stage, counts)
    if is_main_process():
        print("\n".join(lines + warnings), flush=True)
    return warnings


def mining_line(folder: Path) -> str:
    """One line on stage 2's mined negatives (``mining.json``'s counts, summed over tasks)."""
    counts = json.loads((folder / "mining.json").read_text(encoding="utf-8"))["counts"].values()
    total = {key: sum(c[key] for c in counts) for key in ("rows", "of", "type1", "type2", "fallback")}
    return (f"mined negatives: {total['rows']:,} of {total['of']:,} queries have a mined negative ({total['type1']:,} type-1, "
            f"{total['type2']:,} type-2, {total['fallback']:,} fallback), saved in {folder}")


# -- the whole recipe ----------------------------------------------------------------------------------------------


@dataclass
class RecipeInputs:
    base_model: str
    data: str
    eval_data: str | None
    text_data: str | None


class MMEmbedRun:
    """Runs the chosen stages of an :class:`MMEmbedConfig` (the embedded default's inputs written once under its
    output folder) and records them in ``stages.json``."""

    def __init__(self, config: MMEmbedConfig) -> None:
        from mm_st.training.stage import output_dir_of

        config.check()
        self.config = config
        self.root = output_dir_of(config).resolve()

    def inputs(self, write: bool = True) -> RecipeInputs:
        c = self.config
        if not c.embedded:
            held_out = str(self.root / "held-out") if self.holds_out() else None
            return RecipeInputs(c.model, c.data, c.eval_data or held_out, c.text_data)
        from mm_st.training.distributed import is_local_main, main_process_first
        from mm_st.training.outputs import RunFolder

        folder = RunFolder(self.root, is_local_main() and write)
        name = c.family or c.tiny_family
        base = self.root / "base-model" / f"{name}-seed{c.seed}"
        data = embedded_dir(c, self.root / "data", "mbeir")
        text = embedded_dir(c, self.root / "data", "text-pairs")
        with main_process_first(local=True) if write else nullcontext():  # the others read what this node's first wrote
            if folder.writer:
                folder.claim("base-model")
                if not (base / "config.json").is_file():
                    embedded.write_base_model(name, base, c.seed)
                folder.claim("data")
                embedded.write_mbeir(data, split="train", limit=c.max_rows_per_dataset, seed=c.seed)
                embedded.write_mbeir(data, split="test", seed=c.seed)
                embedded.write_text_pairs(text, limit=c.max_rows_per_dataset)
        return RecipeInputs(str(base), str(data), str(data), str(text / "text-pairs.jsonl"))

    def holds_out(self) -> bool:
        """Whether this run holds out training queries to score its stages on (no --eval-data)."""
        c = self.config
        return c.evaluate and c.eval_data is None and c.held_out_share > 0 and c.data is not None and not c.embedded

    def write_held_out(self, inputs: RecipeInputs) -> RecipeInputs:
        """``<output_dir>/held-out/`` (:mod:`mm_st.training.heldout`), written once for the data, share and seed; the
        inputs, without evaluation data when every task is too small to hold a query out."""
        if not self.holds_out():
            return inputs
        from mm_st.training.distributed import is_local_main, main_process_first
        from mm_st.training.heldout import held_out_key, is_held_out, read_record
        from mm_st.training.outputs import RunFolder

        c = self.config
        folder = RunFolder(self.root, is_local_main())
        key = held_out_key(c.data, c.data_split, c.held_out_share, c.seed, mbeir_fingerprint(c.data, c.data_split))
        with main_process_first(local=True):  # the others read what this node's first wrote
            if folder.writer and not (is_held_out(inputs.eval_data) and read_record(inputs.eval_data)["key"] == key):
                self._hold_out(folder.claim("held-out"), key)
        return inputs if read_record(inputs.eval_data)["tasks"] else dataclasses.replace(inputs, eval_data=None)

    def _hold_out(self, folder: Path, key: dict[str, Any]) -> None:
        from mm_st.data import load_mbeir
        from mm_st.data.converters import mbeir_candidate_pools
        from mm_st.data.mbeir import mbeir_root
        from mm_st.training.heldout import write_held_out

        c = self.config
        named = load_mbeir(c.data, split=c.data_split, instructions="none", on_missing=c.on_missing, seed=c.seed,
                           ids=True)
        pools, _ = mbeir_candidate_pools(c.data, c.data_split, "skip", verify_images=False)
        write_held_out(folder, mbeir_root(c.data), c.data_split, dict(named), pools, key, c.seed)

    def check_own_folders(self) -> None:
        """The recipe's own folders that a later stage writes (``mined-negatives/``) must not be a user's: refused in
        the plan, before stage 1 trains."""
        from mm_st.training.outputs import RunFolder

        if 2 in self.config.stage_numbers() and not self.config.mined_negatives:
            RunFolder(self.root, writer=False).check_claimable("mined-negatives")

    def stage_dir(self, n: int) -> Path:
        return self.root / f"stage{n}"

    def stage_config(self, n: int, inputs: RecipeInputs) -> MMEmbedConfig:
        c = self.config
        values = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
        values.update(stages=[str(n)], from_stage=0, output_dir=str(self.stage_dir(n)), model=inputs.base_model,
                      data=inputs.data, eval_data=inputs.eval_data, text_data=inputs.text_data)
        if n == 2:
            values["mining_model"] = c.mining_model or str(self.stage_dir(1) / "model")
            values["mined_negatives"] = c.mined_negatives or str(self.root / "mined-negatives")
        if n == 3:
            values.update(model=str(self.stage_dir(2) / "model"), learning_rate=c.text_learning_rate,
                          max_steps=c.text_steps)
        if c.from_stage and n >= c.from_stage:
            values["resume"] = "never"
        values.update(from_stage=0, push_to_hub=None)  # the recipe pushes its last stage's model (run)
        return STAGES[n](**values)

    def _needs(self, n: int) -> Path | None:
        """The earlier stage's model a stage starts from or mines with, if it is not there."""
        needed = {2: self.stage_dir(1) / "model", 3: self.stage_dir(2) / "model"}.get(n)
        if n == 2 and self.config.mining_model:
            return None
        return needed if needed is not None and not (needed / "modules.json").is_file() else None

    def plan_lines(self) -> list[str]:
        from mm_st.training.stage import dry_run

        self.check_own_folders()
        inputs = self.inputs()
        self.check_inputs_unchanged(inputs)
        inputs = self.write_held_out(inputs)
        lines = [f"mm_st mmembed recipe{' (embedded default: offline, CPU)' if self.config.embedded else ''}: stages "
                 f"{', '.join(map(str, self.config.stage_numbers()))} in {self.root}",
                 self.comparison_line(inputs)]
        for n in self.config.stage_numbers():
            stage = self.stage_config(n, inputs)
            missing = self._needs(n)
            if missing is not None and n == 3:
                stage.model = inputs.base_model  # planned on the base model: stage 2's does not exist yet
            lines += ["", *dry_run(stage).lines()]
            if missing is not None:
                lines.append(f"note: stage {n} starts from / mines with {missing}, written by stage {n - 1} (not there "
                             "yet); the plan above used the base model")
        return lines

    def comparison_line(self, inputs: RecipeInputs) -> str:
        """What the plan says about comparing the stages on held-out data."""
        from mm_st.training.heldout import MIN_TASK_ROWS, plan_line

        c = self.config
        if self.holds_out() and not inputs.eval_data:
            return (f"held-out comparison: none: no task has the {MIN_TASK_ROWS} training queries needed to hold one "
                    "out (a fifth of a task at most); give --eval-data to detect a stage that lowers a task's score")
        if not (c.evaluate and inputs.eval_data):
            return ("held-out comparison: none (--no-evaluate, or no --eval-data and --held-out-share 0): a stage that "
                    "lowers a task's score is not detected")
        if self.holds_out():
            return plan_line(inputs.eval_data, c.max_score_drop)
        return (f"held-out comparison: after each stage, each task of {inputs.eval_data} against the model the stage "
                f"started from and the earlier stages; a top-1 drop above {c.max_score_drop:g} is a warning")

    def run(self) -> Any:
        from mm_st.training.outputs import RunFolder
        from mm_st.training.distributed import is_local_main, is_main_process
        from mm_st.training.stage import run_stage

        numbers = self.config.stage_numbers()
        for n in numbers:  # before anything is written
            missing = self._needs(n)
            if missing is not None and n - 1 not in numbers:
                raise FileNotFoundError(f"mmembed stage {n} needs {str(missing)!r} (stage {n - 1}'s model); run "
                                        f"--stages {n - 1},{n} (or --from-stage {n - 1}).")
        self.check_own_folders()
        if self.config.push_to_hub and is_main_process():
            from mm_st.hub import check_hub_access

            check_hub_access(self.config.push_to_hub)  # a wrong or read-only token fails now, not after training
        inputs = self.inputs()
        self.check_inputs_unchanged(inputs)
        inputs = self.write_held_out(inputs)
        results = {}
        for n in numbers:
            stage = self.stage_config(n, inputs)
            if n == 2 and not self.config.mined_negatives and is_local_main():
                RunFolder(self.root).claim("mined-negatives")
            if is_main_process():
                print(f"\n=== MM-Embed stage {n}: {STAGE_TITLES[n]} ===", flush=True)
            results[n] = run_stage(stage)
            if is_main_process():
                self.record(n, stage, results[n])
                if n == 2 and not results[n].already_finished:
                    print(mining_line(Path(stage.mined_negatives)), flush=True)
        last = max(results)
        if is_main_process():
            print("\n".join(self.summary()), flush=True)
            self.write_card_stages(last, results[last].model_dir)
            if self.config.push_to_hub:
                from mm_st.hub import push_trained_model

                push_trained_model(self.config, results[last].model_dir,
                                   RunFolder(self.stage_dir(last), is_local_main()))
        return results[last]

    # -- stages.json -------------------------------------------------------------------------------------------

    def manifest_path(self) -> Path:
        return self.root / "stages.json"

    def manifest(self) -> dict[str, Any]:
        path = self.manifest_path()
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"recipe": "mmembed", "stages": {}}

    def record(self, n: int, stage: MMEmbedConfig, result: Any) -> None:
        from mm_st.training.outputs import RunFolder

        data = self.fingerprints(n, stage)
        warnings: list[str] = []
        mining = None
        if n == 2:
            mined = Path(stage.mined_negatives)
            data["mined_negatives"] = _fingerprint(list(mined.glob("*.parquet"))) if mined.is_dir() else None
            record = mined / "mining.json"
            mining = json.loads(record.read_text(encoding="utf-8"))["counts"] if record.is_file() else None
            warnings += _unmined_warnings(stage, mining or {})
        manifest = self.manifest()
        drops = score_drops(result.before, result.after, manifest["stages"], n, stage.max_score_drop)
        for line in drops:
            print(line, flush=True)
        warnings += drops
        manifest["stages"][str(n)] = {
            "title": STAGE_TITLES[n], "output_dir": stage.output_dir, "model_dir": str(result.model_dir),
            "starts_from": stage.model, "steps": result.steps, "data": data, "before": result.before,
            "after": result.after, "config": {"recipe": stage.recipe, **stage.to_dict()},
            **({"mining": mining} if mining is not None else {}), "warnings": warnings,
        }
        if self.holds_out() and stage.eval_data:
            from mm_st.training.heldout import held_out_fingerprint, read_record

            held_out = read_record(stage.eval_data)
            manifest["held_out"] = {"folder": stage.eval_data, "share": held_out["key"]["share"], "seed": stage.seed,
                                    "queries": {name: len(t["qids"]) for name, t in held_out["tasks"].items()},
                                    "fingerprint": held_out_fingerprint(stage.eval_data)}
        RunFolder(self.root).claim("stages.json")
        self.manifest_path().write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def write_card_stages(self, last: int, model_dir: Path) -> None:
        """``<model_dir>/training_stages.json``: what the model card reports of the run (no local paths): the
        untrained model's held-out scores and, for each stage up to ``last``, its title, steps, learning rate
        and scores. Written the same way on every re-run (a finished re-run leaves the folder byte-identical)."""
        stages = self.manifest()["stages"]
        record = {"untrained": next((stages[n]["before"] for n in ("1", "2") if n in stages and stages[n]["before"]), {}),
                  "stages": [{"stage": int(n), "title": stages[n]["title"], "steps": stages[n]["steps"],
                              "learning_rate": stages[n]["config"]["learning_rate"], "after": stages[n]["after"]}
                             for n in sorted(stages) if int(n) <= last]}
        (Path(model_dir) / CARD_STAGES).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def fingerprints(self, n: int, stage: MMEmbedConfig) -> dict[str, str]:
        """What the inputs a stage reads hold now (``stages.json``'s ``data``, less the mined negatives it derives)."""
        data = {"mbeir": mbeir_fingerprint(stage.data, stage.data_split)}
        if n == 3 and stage.text_data:
            from mm_st.io import is_local

            data["text_pairs"] = _fingerprint([Path(stage.text_data)]) if is_local(stage.text_data) else f"hub:{stage.text_data}"
        return data

    def check_inputs_unchanged(self, inputs: RecipeInputs) -> None:
        """A finished stage that would be kept (not run again) whose inputs changed since it ran is an error naming
        the input and how to start over: its model no longer matches the data."""
        from mm_st.training.outputs import RunFolder

        recorded = self.manifest()["stages"]
        flags = {"mbeir": ("the M-BEIR data", "--data"), "text_pairs": ("the text pairs", "--text-data")}
        for n in self.config.stage_numbers():
            if str(n) not in recorded or (self.config.from_stage and n >= self.config.from_stage):
                continue
            if not RunFolder(self.stage_dir(n), writer=False).finished():
                continue
            stage = self.stage_config(n, inputs)
            before = recorded[str(n)].get("data", {})
            changed = [(name, before[name], now) for name, now in self.fingerprints(n, stage).items()
                       if name in before and before[name] != now]
            if changed:
                what = "; ".join(f"{flags[name][0]} ({flags[name][1]} {getattr(stage, flags[name][1][2:].replace('-', '_'))}) "
                                 f"changed since it ran (fingerprint {old} then, {new} now)" for name, old, new in changed)
                raise ValueError(f"mmembed: stage {n} in {str(self.root)!r} finished on other inputs: {what}. Its model "
                                 f"does not match them; train again on them with --from-stage {n} (stage {n} and the "
                                 "later ones start over), or use another --output-dir.")

    def summary(self) -> list[str]:
        """Every stage's held-out scores next to the untrained model and chance."""
        from mm_st.evaluation.mbeir_global import eval_task_names
        from mm_st.training.evaluators import MBEIREvaluator

        stages = self.manifest()["stages"]
        untrained = next((stages[n]["before"] for n in ("1", "2") if n in stages and stages[n]["before"]), None)
        if untrained is None or not self.config.evaluate:
            return []
        columns = {"untrained": untrained, **{f"stage {n}": stages[n]["after"] for n in sorted(stages)}}
        last = stages[max(stages)]
        return ["", "MM-Embed stages on the held-out M-BEIR tasks (Recall@k; wrong_modality_at_1: share of queries whose "
                "top-1 candidate has the wrong modality, lower is better)",
                *MBEIREvaluator.summary(columns, last["config"]["eval_data"],
                                        self.config.eval_tasks or eval_task_names(last["config"]["eval_data"]))]
