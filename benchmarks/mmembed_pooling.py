"""MM-Embed's architecture options: last-token vs latent-attention pooling, each with causal / bidirectional attention.

Four arms of ``build_model(path, recipe="mmembed", pooling=..., attention=...)`` (issue 22), the latent-attention
arms at NV-Embed's sizes (512 latents, 8 heads of the hidden size's width; ``mm_st.latent_attention``):

- ``last/causal`` (today's default), ``last/bi``, ``latent/causal``, ``latent/bi``.

Quality (``--part quality``): per seed, a tiny random Qwen2-VL (``mm_st.testing.tiny_model("qwen2_vl", seed=s)``)
is trained from scratch in each arm with sentence-transformers' trainer and ``mm_st.losses.MultimodalInfoNCELoss``
(tau 0.05, duplicates masked) on two MM-Embed-style tasks built from the bundled emoji data's train split, each
batch from one task (ST's proportional multi-dataset sampler), queries in MM-Embed's format
(``Instruct: {instruction}\\nQuery: {input}``, the instruction through ST's ``prompts``), documents bare:

- t2i: emoji name (English) -> emoji image, instruction ``Retrieve the emoji image that matches the given name.``
- i2t: emoji image -> its Unicode subgroup as text (``face smiling``), instruction
  ``Find the category of the given emoji image.``

Same steps, batch, learning rate, schedule, data order and backbone weights in every arm of a seed (the seed
also sets the latent array's initialisation). Evaluation on the 391 held-out test emoji: t2i Recall@1 / @10
(each test name against the 391 test images; chance 0.0026 / 0.026) and i2t Recall@1 (each test image against
the 99 subgroup names; chance 0.010).

Cost (``--part cost``): one training step (``model.preprocess`` of the two columns of a t2i batch of 32 +
loss + backward + AdamW step) at the ``tiny`` shape (the tiny Qwen2-VL, hidden 64) and the ``7m`` shape
(``encode_overhead.build_checkpoint``: hidden 256, 5 layers); arms interleaved (order rotated each repeat),
median process CPU time per step (one torch thread), ratio to ``last/causal`` measured in the same run.
Also ``latent/bi, head d/8``: latent attention with heads of width hidden/8 instead of NV-Embed's hidden
(not NV-Embed's size; shows what the head width costs). Peak memory of one step: a fresh subprocess per arm,
after a warm-up step (AdamW state allocated), ``gc`` + ``malloc_trim``; peak = growth of the kernel's
peak-RSS counter (VmHWM, reset through ``/proc/self/clear_refs``) over the RSS before the step
(``peak_memory.py``; tracemalloc would not see torch's buffers).

Usage::

    python benchmarks/mmembed_pooling.py                                   # both parts, 3 seeds, 1 thread
    python benchmarks/mmembed_pooling.py --part quality --seeds 1 2 3 --steps 400
    python benchmarks/mmembed_pooling.py --part cost --shapes tiny 7m --repeats 7
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_overhead import build_checkpoint, cpu_model  # noqa: E402
from peak_memory import reset_hwm, status, trim  # noqa: E402

ARMS = {
    "last/causal": ("lasttoken", "causal", None),
    "last/bi": ("lasttoken", "bidirectional", None),
    "latent/causal": ("latent_attention", "causal", {}),
    "latent/bi": ("latent_attention", "bidirectional", {}),
}
LIGHT = "latent/bi, head d/8"  # cost part only: heads of width hidden/8 (not NV-Embed's size)
BASELINE = "last/causal"
T2I = "Retrieve the emoji image that matches the given name."
I2T = "Find the category of the given emoji image."


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("quality", "cost", "both"), default="both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=400, help="training steps per arm and seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--shapes", nargs="+", default=["tiny", "7m"], choices=["tiny", "7m"])
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per arm (cost part)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--child-memory", nargs=3, metavar=("CHECKPOINT", "ARM", "BATCH"), help=argparse.SUPPRESS)
    return parser.parse_args()


def quiet() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def arm_kwargs(arm: str, hidden: int) -> dict:
    if arm == LIGHT:
        return {"pooling": "latent_attention", "attention": "bidirectional", "pooling_kwargs": {"head_dim": hidden // 8}}
    pooling, attention, pooling_kwargs = ARMS[arm]
    return {"pooling": pooling, "attention": attention, "pooling_kwargs": pooling_kwargs}


def build(path: str, arm: str, seed: int):
    from mm_st import build_model

    hidden = json.loads((Path(path) / "config.json").read_text())["text_config"]["hidden_size"]
    torch.manual_seed(seed)  # the latent array's initialisation
    return build_model(path, recipe="mmembed", **arm_kwargs(arm, hidden))


def emoji_tables() -> dict:
    from mm_st.data import load_emoji

    out = {}
    for split in ("train", "test"):
        data = load_emoji(split)
        out[split] = {
            "names": list(data["name_en"]),
            "images": [image.convert("RGB") for image in data["image"]],
            "labels": [group.replace("-", " ") for group in data["subgroup"]],
        }
    out["label_set"] = sorted(set(out["train"]["labels"]) | set(out["test"]["labels"]))
    return out


# -- quality ---------------------------------------------------------------------------------------


def train(model, tables: dict, args: argparse.Namespace, seed: int, workdir: Path) -> float:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers

    from mm_st.losses import MultimodalInfoNCELoss

    rows = tables["train"]
    data = DatasetDict({
        "t2i": Dataset.from_dict({"anchor": rows["names"], "positive": rows["images"]}),
        "i2t": Dataset.from_dict({"anchor": rows["images"], "positive": rows["labels"]}),
    })
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0, seed=seed,
        data_seed=seed, save_strategy="no", report_to="none", logging_steps=max(1, args.steps // 4),
        dataloader_drop_last=True, use_cpu=True, disable_tqdm=True,
        prompts={"t2i": {"anchor": T2I}, "i2t": {"anchor": I2T}},
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=data,
                                         loss=MultimodalInfoNCELoss(model, temperature=0.05))
    start = time.process_time()
    trainer.train()
    return time.process_time() - start


def evaluate(model, tables: dict) -> dict[str, float]:
    test = tables["test"]
    model.eval()
    with torch.inference_mode():
        queries = model.encode_query(test["names"], prompt=T2I, batch_size=64, convert_to_tensor=True)
        images = model.encode_document(test["images"], batch_size=64, convert_to_tensor=True)
        ranks = (queries @ images.T).argsort(dim=1, descending=True)
        gold = torch.arange(len(test["names"]))[:, None]
        image_queries = model.encode_query(test["images"], prompt=I2T, batch_size=64, convert_to_tensor=True)
        labels = model.encode_document(tables["label_set"], batch_size=64, convert_to_tensor=True)
        predicted = (image_queries @ labels.T).argmax(dim=1)
    truth = torch.tensor([tables["label_set"].index(label) for label in test["labels"]])
    model.train()
    return {
        "t2i_r1": float((ranks[:, :1] == gold).any(1).float().mean()),
        "t2i_r10": float((ranks[:, :10] == gold).any(1).float().mean()),
        "i2t_r1": float((predicted == truth).float().mean()),
    }


def quality(args: argparse.Namespace, tables: dict) -> dict:
    from mm_st.testing import tiny_model

    results: dict[str, dict[int, dict]] = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        path = tiny_model("qwen2_vl", seed=seed)
        for arm in args.arms:
            model = build(path, arm, seed)
            before = evaluate(model, tables)
            with tempfile.TemporaryDirectory() as workdir:
                cpu = train(model, tables, args, seed, Path(workdir))
            after = evaluate(model, tables)
            results[arm][seed] = {"before": before, "after": after, "cpu_s": cpu}
            print(f"seed {seed} {arm:14s} before {before} after {after} ({cpu:.0f} CPU s)", flush=True)
    return results


def print_quality(results: dict, args: argparse.Namespace) -> None:
    print(f"\n### quality: {args.steps} steps x batch {args.batch_size}, lr {args.lr}, seeds {args.seeds} "
          "(mean ± std over seeds; min..max)\n")
    print("| arm | t2i R@1 | t2i R@10 | i2t R@1 | CPU s / run |\n|---|---:|---:|---:|---:|")
    for arm, by_seed in results.items():
        cells = []
        for key in ("t2i_r1", "t2i_r10", "i2t_r1"):
            values = [r["after"][key] for r in by_seed.values()]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {std:.4f} ({min(values):.4f}..{max(values):.4f})")
        cpu = statistics.mean(r["cpu_s"] for r in by_seed.values())
        print(f"| {arm} | " + " | ".join(cells) + f" | {cpu:.0f} |")
    before = [r["before"] for by_seed in results.values() for r in by_seed.values()]
    print("\nuntrained (all arms and seeds): " + ", ".join(
        f"{key} {statistics.mean(b[key] for b in before):.4f}" for key in ("t2i_r1", "t2i_r10", "i2t_r1")))
    if BASELINE in results:
        print("\npaired differences to last/causal (same seed), mean ± std:")
        for arm, by_seed in results.items():
            if arm == BASELINE:
                continue
            parts = []
            for key in ("t2i_r1", "t2i_r10", "i2t_r1"):
                diffs = [by_seed[s]["after"][key] - results[BASELINE][s]["after"][key] for s in by_seed]
                std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                parts.append(f"{key} {statistics.mean(diffs):+.4f} ± {std:.4f}")
            print(f"  {arm}: " + ", ".join(parts))


# -- cost ------------------------------------------------------------------------------------------


def step_batch(tables: dict, batch: int) -> tuple[list, list]:
    rows = tables["train"]
    return rows["names"][:batch], rows["images"][:batch]


def make_step(model, anchors, positives):
    from mm_st.losses import MultimodalInfoNCELoss

    loss_fn = MultimodalInfoNCELoss(model, temperature=0.05)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        features = [model.preprocess(anchors, prompt=T2I), model.preprocess(positives)]
        loss_fn(features, None).backward()
        optimizer.step()

    return step


def checkpoint_for(shape: str, workdir: Path) -> str:
    from mm_st.testing import tiny_model

    if shape == "tiny":
        return tiny_model("qwen2_vl")
    directory = workdir / shape
    directory.mkdir(parents=True, exist_ok=True)
    build_checkpoint(shape, 0, directory, "cpu", torch.float32)
    return str(directory)


def child_memory(args: argparse.Namespace) -> None:
    checkpoint, arm, batch = args.child_memory
    model = build(checkpoint, arm, 0)
    model.train()
    step = make_step(model, *step_batch(emoji_tables(), int(batch)))
    step()  # warm-up: AdamW state, gradient buffers
    trim()
    before = status("VmRSS")
    if not reset_hwm():
        raise SystemExit("/proc/self/clear_refs is not writable: cannot reset the peak-RSS counter")
    step()
    print("RESULT" + json.dumps({"peak_growth": status("VmHWM") - before, "rss_before": before}))


def cost(args: argparse.Namespace, tables: dict, workdir: Path) -> dict:
    out = {}
    arms = [arm for arm in args.arms] + [LIGHT]
    for shape in args.shapes:
        checkpoint = checkpoint_for(shape, workdir)
        anchors, positives = step_batch(tables, args.batch_size)
        models = {arm: build(checkpoint, arm, 0) for arm in arms}
        params = {arm: sum(p.numel() for p in model.parameters()) for arm, model in models.items()}
        steps = {arm: make_step(model, anchors, positives) for arm, model in models.items()}
        for step in steps.values():  # warm-up
            step()
        times = {arm: [] for arm in arms}
        for repeat in range(args.repeats):
            shift = repeat % len(arms)
            for arm in arms[shift:] + arms[:shift]:
                start = time.process_time()
                steps[arm]()
                times[arm].append(time.process_time() - start)
        del models, steps
        memory = {}
        for arm in arms:
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child-memory", checkpoint, arm,
                   str(args.batch_size)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"memory child failed ({shape}, {arm}):\n{proc.stderr[-3000:]}")
            memory[arm] = json.loads(proc.stdout.split("RESULT", 1)[1])["peak_growth"]
        out[shape] = {"params": params, "times": times, "memory": memory}
        print_cost(shape, out[shape])
    return out


def print_cost(shape: str, result: dict) -> None:
    times, memory, params = result["times"], result["memory"], result["params"]
    base = statistics.median(times[BASELINE])
    print(f"\n### cost, {shape} shape ({params[BASELINE]:,} parameters in last/causal)\n")
    print("| arm | parameters | CPU s / step (median) | ratio to last/causal | paired ratio | peak step memory |")
    print("|---|---:|---:|---:|---:|---:|")
    for arm, values in times.items():
        med = statistics.median(values)
        paired = statistics.median(a / b for a, b in zip(values, times[BASELINE]))
        print(f"| {arm} | {params[arm]:,} | {med:.3f} | {med / base:.2f} | {paired:.2f} | "
              f"{memory[arm] / 2**20:.1f} MiB ({memory[arm] / memory[BASELINE]:.2f}x) |")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    if args.child_memory:
        child_memory(args)
        return
    print(f"# {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"# machine: {cpu_model()}, {platform.python_version()}, torch {torch.__version__}, "
          f"threads {args.threads}")
    wall = time.perf_counter()
    tables = emoji_tables()
    results = {}
    if args.part in ("quality", "both"):
        results["quality"] = quality(args, tables)
        print_quality(results["quality"], args)
    if args.part in ("cost", "both"):
        with tempfile.TemporaryDirectory(prefix="mm_st_mmembed_") as workdir:
            results["cost"] = cost(args, tables, Path(workdir))
    print(f"\n# wall {time.perf_counter() - wall:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
