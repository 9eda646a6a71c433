"""MM-Embed stage 2 on CATEGORY-shaped data: does the false-negative filter keep stage 1's text->image accuracy?

The data (written by :func:`write_category_mbeir`, M-BEIR layout, emoji from the bundled data): a text->image task
whose queries name a category (an emoji subgroup: ``country-flag``, ``person-role``, ``animal-mammal``, ...; eight
wordings per category) and list ONE image of it as their positive while every image of the category is relevant
(Fashion200K / classification shape), plus a text->text task (emoji name -> its keyword paraphrase); one pool
mixes the images and the texts. The held-out split (unseen emoji of the same categories) lists every image of the
query's category as positive.

For each batch composition (``mixed``, ``per_dataset``) and seed: stage 1 (in-batch negatives), then stage 2 twice
from the same stage-1 miner: ``stage 2, no filter`` (``mining_relative_margin=None``) and ``stage 2, filter``
(the recipe's default, ``relative_margin=0.05``). Both stage-2 arms exclude every listed positive and keep short
rows with the nearest-the-window fallback (today's code); "no filter" is the mining of the issue's report otherwise.
Printed: per arm the mean over seeds of hit_rate_at_1 (the top-1 candidate is relevant: text->image accuracy; with
a whole category relevant Recall@1 is at most 1/its size), Recall@1 and wrong_modality_at_1 per task, each seed's
t2i accuracy, and the mining counts (type-2 negatives, candidates filtered as likely false negatives).

Usage::

    python benchmarks/mmembed_category.py                     # 3 seeds x 2 batchings, 200 steps per stage
    python benchmarks/mmembed_category.py --seeds 0 --steps 10 --batchings per_dataset
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from mmembed_stages import _mean, run_arm  # this folder's MM-Embed stages benchmark: one arm, mean over seeds

CATEGORIES = ("country-flag", "person-role", "animal-mammal", "transport-ground", "sky & weather", "person-sport")
WORDINGS = ("{c}", "a {c} emoji", "an emoji of the category {c}", "{c} pictures", "show me {c}", "some {c}",
            "the {c} kind", "anything in {c}")
ARMS = ("stage 1", "stage 2, no filter", "stage 2, filter")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batchings", nargs="+", default=["per_dataset", "mixed"])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps of stages 1 and 2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mining-ranks", default="6,10",
                        help="type-2 window (first,last); 46-50 scaled to this pool of ~400 images (categories of "
                             "31-200 images), so the window lies inside the query's category as 46-50 does in M-BEIR's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="where runs go (default: a new temporary directory)")
    parser.add_argument("--out", default=None, help="JSON file for the raw results")
    return parser.parse_args()


def write_category_mbeir(root: Path, split: str) -> Path:
    """The category-shaped layout (see the module docstring) for ``split`` (``train`` or ``test``) under ``root``."""
    from mm_st.data import load_emoji
    from mm_st.data.emoji import EMOJI_MBEIR_DATASET, EMOJI_MBEIR_POOL_FILE, EMOJI_MBEIR_QUERY_FILE, EMOJI_MBEIR_TASKS
    from mm_st.training.embedded import MBEIR_INSTRUCTIONS_HEADER, mbeir_paraphrase

    dataset_id, offset = EMOJI_MBEIR_DATASET[0], {"train": 0, "test": 1_000_000}[split]
    ds = load_emoji(split)
    keep = [i for i, subgroup in enumerate(ds["subgroup"]) if subgroup in CATEGORIES]
    pool, members, queries = [], {c: [] for c in CATEGORIES}, {"Emoji_t2i": [], "Emoji_t2t": []}

    def candidate(txt: str | None, image: str | None) -> str:
        did = f"{dataset_id}:{offset + len(pool) + 1}"
        pool.append({"did": did, "txt": txt, "img_path": image, "modality": "image" if image else "text"})
        return did

    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    for i in keep:
        row = ds[i]
        path = f"images/{split}/{i}.png"
        if not (root / path).is_file():
            row["image"].convert("RGB").save(root / path)
        members[row["subgroup"]].append(candidate(None, path))
        paraphrase = mbeir_paraphrase(row["name_en"], row["keywords_en"])
        candidate(row["name_en"], None)
        if paraphrase != row["name_en"]:
            queries["Emoji_t2t"].append((row["name_en"], [candidate(paraphrase, None)]))
    for c in CATEGORIES:
        if split == "train":  # one listed image per query, as in classification-shaped training data
            queries["Emoji_t2i"] += [(WORDINGS[k % len(WORDINGS)].format(c=c), [did]) for k, did in enumerate(members[c])]
        else:  # held out: every image of the category is relevant
            queries["Emoji_t2i"] += [(w.format(c=c), members[c]) for w in WORDINGS]
    count = 0
    for task, rows in queries.items():
        spec = EMOJI_MBEIR_TASKS[task]
        lines = []
        for text, positives in rows:
            count += 1
            lines.append(json.dumps({"qid": f"{dataset_id}:{offset + 500_000 + count}", "query_txt": text,
                                     "query_img_path": None, "query_modality": "text", "pos_cand_list": positives,
                                     "neg_cand_list": [], "task_id": spec.task_id}) + "\n")
        path = root / EMOJI_MBEIR_QUERY_FILE.format(split=split, task_id=spec.task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines), encoding="utf-8")
    path = root / EMOJI_MBEIR_POOL_FILE.format(split=split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in pool), encoding="utf-8")
    (root / "instructions").mkdir(exist_ok=True)
    (root / "instructions" / "query_instructions.tsv").write_text("\n".join([MBEIR_INSTRUCTIONS_HEADER, *(
        "\t".join(["text", EMOJI_MBEIR_TASKS[t].candidate_modality, EMOJI_MBEIR_DATASET[1], dataset_id,
                   EMOJI_MBEIR_TASKS[t].instruction]) for t in queries)]) + "\n", encoding="utf-8")
    return root


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from mm_st.testing import tiny_model
    from mm_st.training import MMEmbedConfig
    from mm_st.evaluation.mbeir import mbeir_table
    from mm_st.training.evaluators import MBEIREvaluator
    from mm_st.training.mmembed import MMEmbedRun

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mm_st_mmembed_category_"))
    data = workdir / "data"
    write_category_mbeir(data, "train")
    write_category_mbeir(data, "test")
    started = time.perf_counter()
    runs: dict[str, dict[int, dict]] = {}
    for batching in args.batchings:
        for seed in args.seeds:
            base = tiny_model("qwen2_vl", workdir / f"base-seed{seed}", seed=seed, head=False)
            config = MMEmbedConfig(
                model=str(base), data=str(data), eval_data=str(data), stages=["1", "2"], seed=seed,
                batch_mixing=batching, max_steps=args.steps, global_batch_size=args.batch, mini_batch_size=args.batch,
                learning_rate=1e-3, temperature=0.05, adapter="none", mask_duplicates=True, save_steps=10**6,
                logging_steps=10**6, threads=args.threads, max_length=64, mining_ranks=args.mining_ranks.split(","),
                output_dir=str(workdir / batching / f"seed{seed}"))
            recipe = MMEmbedRun(config)
            inputs = recipe.inputs()
            arms = runs.setdefault(batching, {}).setdefault(seed, {})
            arms["stage 1"] = run_arm(recipe.stage_config(1, inputs))
            for arm, margin in (("stage 2, no filter", None), ("stage 2, filter", 0.05)):
                stage2 = recipe.stage_config(2, inputs)
                stage2.mining_relative_margin = margin
                stage2.output_dir = str(recipe.root / arm.replace(", ", "-").replace(" ", "-"))
                stage2.mined_negatives = str(recipe.root / f"mined-{arm.replace(', ', '-').replace(' ', '-')}")
                arms[arm] = run_arm(stage2)
                arms[arm]["mining"] = json.loads((Path(stage2.mined_negatives) / "mining.json").read_text())["counts"]
            print(f"{batching} seed {seed}: " + ", ".join(f"{a} {r['seconds']:.0f} s" for a, r in arms.items()), flush=True)

    command = "python benchmarks/mmembed_category.py " + shlex.join(sys.argv[1:])
    print(f"\n{command}\nmachine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), seeds {args.seeds}, "
          f"{args.steps} steps per stage, batch {args.batch}, type-2 ranks {args.mining_ranks}, {(time.perf_counter() - started) / 60:.1f} min")
    for batching, per_seed in runs.items():
        columns = {"untrained": _mean([r["stage 1"]["before"] for r in per_seed.values()])}
        columns.update({arm: _mean([r[arm]["after"] for r in per_seed.values()]) for arm in ARMS})
        print(f"\n## batches: {batching} (mean over {len(per_seed)} seeds)")
        table = {label: MBEIREvaluator.unflatten(flat) for label, flat in columns.items()}
        print(mbeir_table(table, metrics=("hit_rate_at_1", "recall_at_1", "wrong_modality_at_1")))
        print("per seed, t2i hit_rate_at_1 / t2i wrong_modality_at_1:")
        for seed, arms in per_seed.items():
            print(f"  seed {seed}: " + " | ".join(
                f"{arm}: {arms[arm]['after'].get('mbeir/Emoji_t2i/hit_rate_at_1', float('nan')):.2f} / "
                f"{arms[arm]['after'].get('mbeir/Emoji_t2i/wrong_modality_at_1', float('nan')):.2f}" for arm in ARMS))
        for arm in ARMS[1:]:
            print(f"  mining, {arm}: " + "; ".join(
                f"seed {seed} t2i {a[arm]['mining']['Emoji_t2i']['type2']} type-2 / "
                f"{a[arm]['mining']['Emoji_t2i']['filtered_false_negatives']} filtered / "
                f"{a[arm]['mining']['Emoji_t2i']['dropped']} dropped" for seed, a in per_seed.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": command, "runs": runs}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
