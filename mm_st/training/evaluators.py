"""Held-out evaluations a stage runs before and after training (sentence-transformers evaluators over mm_st's
mteb tasks). Each has ``check()`` (read the data as the evaluation will, train nothing), ``table(before,
after)`` (the lines printed after training), ``cache_key()`` (what the untrained scores depend on besides
the model) and ``curve_metric`` (drawn in ``training_curve.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from mm_st.training.distributed import is_main_process


class XTDEvaluator(BaseEvaluator):
    """Held-out text->image retrieval through mm_st's mteb task (``XTDT2IRetrieval``), as a trainer evaluator.

    Returns ``xtd_recall_at_1`` / ``xtd_recall_at_10`` averaged over ``languages``; mteb's result files
    go to ``results_dir`` (one revision per evaluation: ``step-N``). Only the main process evaluates.
    """

    curve_metric = "eval_xtd_recall_at_1"  # drawn in training_curve.png

    def __init__(self, data: str, languages: list[str], results_dir: Path, name: str) -> None:
        super().__init__()
        self.primary_metric = "xtd_recall_at_10"
        self.data, self.languages, self.results_dir, self.name = data, list(languages), Path(results_dir), name
        self.last_scores: dict[str, Any] = {}

    def task(self) -> Any:
        from mm_st.evaluation import XTDT2IRetrieval

        task = XTDT2IRetrieval(data=self.data)
        unknown = [lang for lang in self.languages if lang not in task.hf_subsets]
        if unknown:
            raise ValueError(f"eval_languages {unknown} are not XTD languages ({', '.join(task.hf_subsets)}).")
        task.hf_subsets = self.languages
        return task

    def check(self) -> None:
        """Read the evaluation data as the evaluation will (languages, caption files and counts, images), train nothing."""
        self.task().build()

    def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        if not is_main_process():
            return {}
        import mteb

        from mm_st.evaluation import MMSTEncoder

        task = self.task()
        encoder = MMSTEncoder(model, name=f"local/{self.name}", revision=f"step-{max(steps, 0)}")
        result = mteb.evaluate(encoder, task, cache=mteb.ResultCache(self.results_dir), overwrite_strategy="always",
                               show_progress_bar=False)
        scores = result.task_results[0].scores["test"]
        self.last_scores = {s["hf_subset"]: {k: s[k] for k in ("recall_at_1", "recall_at_10")} for s in scores}
        self.num_images = len(Path(self.data, "test_image_names.txt").read_text(encoding="utf-8").split())
        return {f"xtd_{k}": sum(s[k] for s in self.last_scores.values()) / len(self.last_scores)
                for k in ("recall_at_1", "recall_at_10")}

    def get_config_dict(self) -> dict[str, Any]:
        return {"data": self.data, "languages": self.languages}

    def cache_key(self) -> dict[str, Any]:
        """What the untrained model's scores depend on besides the model (see ``eval-before.json``)."""
        return {"data": self.data, "languages": self.languages}

    def table(self, before: dict[str, float], after: dict[str, float]) -> list[str]:
        """Before / after / chance lines for the held-out evaluation."""
        n = getattr(self, "num_images", 0)
        lines = [f"\nHeld-out text->image retrieval ({n} images, XTD layout, mean over {', '.join(self.languages)})",
                 f"{'metric':<12}{'before':>10}{'after':>10}{'chance':>10}"]
        for key, k in (("xtd_recall_at_1", 1), ("xtd_recall_at_10", 10)):
            chance = k / n if n else float("nan")
            lines.append(f"{'R@' + str(k):<12}{before.get(key, float('nan')):>10.4f}"
                         f"{after.get(key, float('nan')):>10.4f}{chance:>10.4f}")
        return lines


TOP1_METRIC = "hit_rate_at_1"


def mbeir_task_instances(data: str, tasks: list[str] | None) -> list[Any]:
    """The M-BEIR tasks of ``data``: a recipe's held-out training queries (:mod:`mm_st.training.heldout`), else the
    test tasks of an M-BEIR root (``tasks``: their names, default every task there)."""
    from mm_st.evaluation.mbeir import mbeir_tasks
    from mm_st.training.heldout import held_out_tasks, is_held_out

    if is_held_out(data):
        return [task for task in held_out_tasks(data) if not tasks or task.files.name in tasks]
    return mbeir_tasks(tasks, data=data)


class MBEIREvaluator(BaseEvaluator):
    """Held-out M-BEIR-layout tasks (mm_st's local M-BEIR mteb tasks) as a trainer evaluator: per task Recall@1,
    Recall@5 and the wrong-modality top-1 rate (:mod:`mm_st.evaluation.mbeir`), flattened as
    ``mbeir/<task>/<metric>`` (also ``hit_rate_at_1``: the top-1 candidate is relevant), plus their means over tasks (``mbeir_recall_at_1``, ``mbeir_wrong_modality_at_1``).
    Only the main process evaluates.
    """

    curve_metric = "eval_mbeir_recall_at_1"
    # "the top-1 candidate is relevant": Recall@1 where a query has one positive; with many (a category),
    # Recall@1 is at most 1/positives and this is the score a stage must not lower
    top1_metric = TOP1_METRIC

    def __init__(self, data: str, tasks: list[str] | None, results_dir: Path, name: str) -> None:
        super().__init__()
        self.primary_metric = "mbeir_recall_at_1"
        self.data, self.tasks, self.results_dir, self.name = data, list(tasks or []) or None, Path(results_dir), name

    def check(self) -> None:
        for task in mbeir_task_instances(self.data, self.tasks):
            task.load_data()

    def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        if not is_main_process():
            return {}
        from mm_st.evaluation.mbeir import evaluate_mbeir

        from mm_st.evaluation.mbeir import TABLE_METRICS

        scores = evaluate_mbeir(model, mbeir_task_instances(self.data, self.tasks), results_dir=self.results_dir,
                                model_name=f"local/{self.name}", revision=f"step-{max(steps, 0)}",
                                metrics=(*TABLE_METRICS, TOP1_METRIC))
        return self.flatten(scores)

    @staticmethod
    def flatten(scores: dict[str, dict[str, float | None]]) -> dict[str, float]:
        flat = {f"mbeir/{task}/{metric}": value for task, values in scores.items() for metric, value in values.items()
                if value is not None}
        for metric in ("recall_at_1", "wrong_modality_at_1"):
            values = [v[metric] for v in scores.values() if v.get(metric) is not None]
            if values:
                flat[f"mbeir_{metric}"] = sum(values) / len(values)
        return flat

    @staticmethod
    def unflatten(flat: dict[str, float]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for key, value in flat.items():
            if key.startswith("mbeir/"):
                _, task, metric = key.split("/", 2)
                out.setdefault(task, {})[metric] = value
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {"data": self.data, "tasks": self.tasks}

    def cache_key(self) -> dict[str, Any]:
        return {"data": self.data, "tasks": self.tasks}

    def table(self, before: dict[str, float], after: dict[str, float]) -> list[str]:
        return ["", f"Held-out M-BEIR tasks ({self.data}): Recall@k and wrong-modality top-1 rate (lower is better)",
                *self.summary({"before": before, "after": after}, self.data, self.tasks)]

    @staticmethod
    def summary(columns: dict[str, dict[str, float]], data: str, tasks: list[str] | None = None) -> list[str]:
        """One line per task and metric: each column's flattened scores, then chance."""
        from mm_st.evaluation.mbeir import mbeir_chance, mbeir_table

        table = {label: MBEIREvaluator.unflatten(flat) for label, flat in columns.items()}
        table["chance"] = mbeir_chance(mbeir_task_instances(data, tasks))
        return mbeir_table(table).splitlines()
