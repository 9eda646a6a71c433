"""MMEB-V2's overall and per-modality scores from a VLM2Vec score file, through mm_st's ``MMEB-V2`` benchmark.

VLM2Vec's code prints per-modality means only (``experiments/report_score_v2.py``); the table's overall score is
derived from the score files. This script feeds a score file's 78 main scores (Hit@1 image and video, nDCG@5
visual documents, the metrics of ``report_score_v2.py``) to ``mteb.get_benchmark("MMEB-V2").get_score`` and prints
``Mean(Task)`` and the modality and meta-task means beside the plain means computed here from the file, to show that
mm_st's aggregation gives the table's numbers.

Usage (the score file from TIGER-AI-Lab/VLM2Vec at commit 6e1e1d42):
    git -C <VLM2Vec clone> show 6e1e1d42:experiments/public/all_scores/v2.0.0/VLM2Vec-V2.0-Qwen2VL-2B.json > s.json
    python benchmarks/mmeb_v2_overall.py s.json
"""

from __future__ import annotations

import argparse
import json

import mteb
from mteb.results import BenchmarkResults, ModelResult, TaskResult

from mm_st.evaluation.registry import register

METRIC = {"image": "hit@1", "video": "hit@1", "visdoc": "ndcg_linear@5"}  # report_score_v2.py modality2metric


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("score_file")
    args = parser.parse_args(argv)
    metrics = json.loads(open(args.score_file, encoding="utf-8").read())["metrics"]
    register()
    bench = mteb.get_benchmark("MMEB-V2")
    wanted = {t.metadata.name for t in bench.tasks}
    scores = {f"MMEB-{name}": values[METRIC[modality]] for modality, rows in metrics.items()
              for name, values in rows.items() if f"MMEB-{name}" in wanted}
    missing = sorted(wanted - set(scores))
    if missing:
        raise SystemExit(f"{args.score_file} has no score for {missing}")
    results = [TaskResult(dataset_revision="score-file", task_name=name, mteb_version=mteb.__version__,
                          evaluation_time=0.0, scores={"test": [{"main_score": value, "hf_subset": "default",
                                                                 "languages": ["eng-Latn"]}]})
               for name, value in scores.items()]
    model = ModelResult(model_name="vlm2vec/score-file", model_revision="1", task_results=results)
    got = bench.get_score(BenchmarkResults(model_results=[model]))["vlm2vec/score-file"]
    plain = {m: 100 * sum(r[METRIC[m]] for n, r in rows.items() if f"MMEB-{n}" in wanted) /
             sum(f"MMEB-{n}" in wanted for n in rows) for m, rows in metrics.items()}
    plain["overall"] = 100 * sum(scores.values()) / len(scores)
    print(f"{len(scores)} datasets")
    for key, value in got.items():
        print(f"{key:40s} {100 * value:6.2f}")
    print("plain means of the file:", {k: round(v, 2) for k, v in plain.items()})
    return {"benchmark": {k: 100 * v for k, v in got.items()}, "plain": plain}


if __name__ == "__main__":
    main()
