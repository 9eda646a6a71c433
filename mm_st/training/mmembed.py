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

The stages are data (:data:`STAGE_SPECS`) on the multi-stage base (:mod:`mm_st.training.multistage`);
``<output_dir>/stage{1,2,3}/`` are ordinary stage folders (resumable, re-runs of a finished stage do
nothing); ``<output_dir>/stages.json`` records what ran (config, data fingerprints, steps, scores). Stage 2's
mining: :mod:`mm_st.training.mmembed_mining`.
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
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets

from mm_st.builder import ATTENTIONS, POOLINGS
from mm_st.data.converters import MBEIR_REPO
from mm_st.hub import CARD_STAGES
from mm_st.training import embedded
from mm_st.training.config import (AT_LEAST_1, EMBEDDED_COMMON, NON_NEGATIVE, POSITIVE, SHARE, VISION_TOWER_HELP, Range,
                                   RecipeConfig, StageContext)
from mm_st.training.config import config_field as _f
from mm_st.training.data import Sources, cap, check_not_empty, embedded_dir
from mm_st.training.distributed import is_local_main, main_process_first
from mm_st.training.fingerprints import files_fingerprint, mbeir_fingerprint
from mm_st.training.fingerprints import saved_model_fingerprint as model_fingerprint  # noqa: F401  (the old name here)
from mm_st.training.mmembed_mining import (check_shared_negatives, mined_negatives, mining_key, mining_line,
                                           unmined_warnings)
# Names that lived here before stage 2's mining moved to mm_st.training.mmembed_mining, kept importable.
from mm_st.training.mmembed_mining import (fallback_note, listed_positives as _listed_positives,  # noqa: F401
                                           mine_task as _mine_task, read_mined, report_mining, save_mined)
from mm_st.training.multistage import MultiStageConfig, StagedRun, StageInputs, StageSpec, score_drops
from mm_st.training.outputs import RunFolder


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
class MMEmbedConfig(MultiStageConfig):
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

    # -- the recipe: its stages (mm_st.training.multistage runs them) ----------------------------------------

    @classmethod
    def stage_specs(cls) -> list[StageSpec]:
        return STAGE_SPECS

    def staged_run(self) -> MMEmbedRun:
        return MMEmbedRun(self)


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

    def prepare(self, model: Any, named: dict[str, datasets.Dataset],
                context: StageContext) -> dict[str, datasets.Dataset]:

        with main_process_first():  # the main process mines and saves; the others read what it saved
            named = mined_negatives(self, named, context)
        check_not_empty(named, "mmembed")
        return super().prepare(model, named, context)


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


STAGE_SPECS = [
    StageSpec(1, "random in-batch negatives on M-BEIR", RandomNegativesStage),
    StageSpec(2, "modality-aware hard negatives, trained from the base model", ModalityAwareStage),
    StageSpec(3, "continual text-to-text fine-tuning from the stage-2 model", TextStage, starts_from=2,
              fields_from={"learning_rate": "text_learning_rate", "max_steps": "text_steps"}),
]
STAGE_TITLES = {spec.number: spec.title for spec in STAGE_SPECS}
STAGES: dict[int, type[MMEmbedConfig]] = {spec.number: spec.config for spec in STAGE_SPECS}


# -- stage 2's mining -------------------------------------------------------------------------------------------


# -- the whole recipe ----------------------------------------------------------------------------------------------


@dataclass
class RecipeInputs(StageInputs):
    """What every MM-Embed stage reads: the base model, the M-BEIR data, the held-out data and the text pairs."""

    data: str
    eval_data: str | None
    text_data: str | None


class MMEmbedRun(StagedRun):
    """Runs the chosen stages of an :class:`MMEmbedConfig` (the embedded default's inputs written once under its
    output folder) and records them in ``stages.json`` (data fingerprints, mining counts, warnings, held-out data)."""

    title = "MM-Embed"

    def inputs(self, write: bool = True) -> RecipeInputs:
        c = self.config
        if not c.embedded:
            held_out = str(self.root / "held-out") if self.holds_out() else None
            return RecipeInputs(c.model, c.data, c.eval_data or held_out, c.text_data)

        folder = RunFolder(self.root, is_local_main() and write)
        data = embedded_dir(c, self.root / "data", "mbeir")
        text = embedded_dir(c, self.root / "data", "text-pairs")
        with main_process_first(local=True) if write else nullcontext():  # the others read what this node's first wrote
            base = embedded.embedded_backbone(folder, c.family or c.tiny_family, c.seed)
            if folder.writer:
                folder.claim("data")
                embedded.write_mbeir(data, split="train", limit=c.max_rows_per_dataset, seed=c.seed)
                embedded.write_mbeir(data, split="test", seed=c.seed)
                embedded.write_text_pairs(text, limit=c.max_rows_per_dataset)
        return RecipeInputs(str(base), str(data), c.eval_data or str(data), str(text / "text-pairs.jsonl"))

    def holds_out(self) -> bool:
        """Whether this run holds out training queries to score its stages on (no --eval-data)."""
        c = self.config
        return c.evaluate and c.eval_data is None and c.held_out_share > 0 and c.data is not None and not c.embedded

    def write_held_out(self, inputs: RecipeInputs) -> RecipeInputs:
        """``<output_dir>/held-out/`` (:mod:`mm_st.training.heldout`), written once for the data, share and seed; the
        inputs, without evaluation data when every task is too small to hold a query out."""
        if not self.holds_out():
            return inputs
        from mm_st.training.heldout import held_out_key, is_held_out, read_record

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

        if 2 in self.config.stage_numbers() and not self.config.mined_negatives:
            RunFolder(self.root, writer=False).check_claimable("mined-negatives")

    def prepare_inputs(self) -> RecipeInputs:
        inputs = self.inputs()
        self.check_inputs_unchanged(inputs)
        return self.write_held_out(inputs)

    def stage_values(self, spec: StageSpec, inputs: RecipeInputs) -> dict[str, Any]:
        """Stage 2 mines with stage 1's model (or --mining-model) into the recipe's own folder (or
        --mined-negatives), outside its stage folder, so that starting stage 2 over keeps them."""
        c = self.config
        if spec.number != 2:
            return {}
        return {"mining_model": c.mining_model or str(self.stage_model(1)),
                "mined_negatives": c.mined_negatives or str(self.root / "mined-negatives")}

    def before_stage(self, n: int, stage: MMEmbedConfig) -> None:
        if n == 2 and not self.config.mined_negatives and is_local_main():
            RunFolder(self.root).claim("mined-negatives")

    def plan_header(self, inputs: RecipeInputs) -> list[str]:
        return [*super().plan_header(inputs), self.comparison_line(inputs)]

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

    # -- stages.json -------------------------------------------------------------------------------------------

    def record(self, n: int, stage: MMEmbedConfig, result: Any) -> None:
        data = self.fingerprints(n, stage)
        warnings: list[str] = []
        mining = None
        if n == 2:
            mined = Path(stage.mined_negatives)
            data["mined_negatives"] = files_fingerprint(list(mined.glob("*.parquet"))) if mined.is_dir() else None
            record = mined / "mining.json"
            mining = json.loads(record.read_text(encoding="utf-8"))["counts"] if record.is_file() else None
            warnings += unmined_warnings(stage, mining or {})
        manifest = self.manifest()
        drops = score_drops(result.before, result.after, manifest["stages"], n, stage.max_score_drop)
        for line in drops:
            print(line, flush=True)
        warnings += drops
        if self.holds_out() and stage.eval_data:
            from mm_st.training.heldout import held_out_fingerprint, read_record

            held_out = read_record(stage.eval_data)
            manifest["held_out"] = {"folder": stage.eval_data, "share": held_out["key"]["share"], "seed": stage.seed,
                                    "queries": {name: len(t["qids"]) for name, t in held_out["tasks"].items()},
                                    "fingerprint": held_out_fingerprint(stage.eval_data)}
        self.write_stage(n, stage, result, {"data": data, **({"mining": mining} if mining is not None else {}),
                                               "warnings": warnings}, manifest)

    def after_stage(self, n: int, stage: MMEmbedConfig, result: Any) -> None:
        if n == 2 and not result.already_finished:
            print(mining_line(Path(stage.mined_negatives)), flush=True)

    def finish(self, last: int, result: Any) -> None:
        print("\n".join(self.summary()), flush=True)
        self.write_card_stages(last, result.model_dir)

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

            data["text_pairs"] = files_fingerprint([Path(stage.text_data)]) if is_local(stage.text_data) else f"hub:{stage.text_data}"
        return data

    def check_inputs_unchanged(self, inputs: RecipeInputs) -> None:
        """A finished stage that would be kept (not run again) whose inputs changed since it ran is an error naming
        the input and how to start over: its model no longer matches the data."""

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
        """Every stage's held-out scores next to the untrained model and chance (none: no mteb import)."""
        stages = self.manifest()["stages"]
        untrained = next((stages[n]["before"] for n in ("1", "2") if n in stages and stages[n]["before"]), None)
        if untrained is None or not self.config.evaluate:
            return []
        from mm_st.evaluation.mbeir_global import eval_task_names
        from mm_st.training.evaluators import MBEIREvaluator

        columns = {"untrained": untrained, **{f"stage {n}": stages[n]["after"] for n in sorted(stages)}}
        last = stages[max(stages)]
        return ["", "MM-Embed stages on the held-out M-BEIR tasks (Recall@k; wrong_modality_at_1: share of queries whose "
                "top-1 candidate has the wrong modality, lower is better)",
                *MBEIREvaluator.summary(columns, last["config"]["eval_data"],
                                        self.config.eval_tasks or eval_task_names(last["config"]["eval_data"]))]
