"""Step time of each recipe's tiny run in the recipe's trainer vs a hand-written ST training loop.

For each recipe's embedded default (``E5VConfig`` / ``VLM2VecConfig`` / ``MME5Config``), built with the
layer's own functions: ``plan_stage(config)``, two models from ``build_stage_model(plan)`` (same
weights), ``build_loss(plan, model)`` for each, the training rows the recipe trains on
(``training_dataset``; mmE5's negatives mined first with ``mine_mme5_negatives``, E5-V's texts cut by
``cut_texts``, as ``run_stage`` does). Then, interleaved step by step in one process:

- ``recipe``: a ``SentenceTransformerTrainer`` with ``training_arguments(plan, False)`` (the recipe's
  arguments: batch, lr, linear schedule with warm-up, gradient clipping, logging every
  ``logging_steps``), the recipe's loss, ST's data collator. One recipe step = the interval from the
  end of the previous step's callback to this step's ``on_step_end``: data loading + collation +
  forward/backward + clipping + AdamW + scheduler + the trainer's logging/bookkeeping.
- ``loop``: run inside that ``on_step_end`` callback, timed on its own: the trainer's batch k (a
  ``torch.utils.data.DataLoader`` over the same dataset with ST's batch sampler for these arguments,
  seeded as the trainer seeds it: same rows, same order), ``model.preprocess`` of each column
  (what ST's ``SentenceTransformerDataCollator`` calls), the same loss, ``backward``,
  ``clip_grad_norm_`` (the recipe's max_grad_norm), ``AdamW`` + ``get_scheduler`` (the recipe's lr and
  schedule), ``zero_grad``.

Excluded from the timed window: checkpoint saving (``save_steps`` set above the step count, so the
trainer saves nothing), evaluation (none during training), trainer set-up and the first
``--warmup`` steps of each arm. Reported: median per-step CPU time (``time.process_time``; one torch
thread) and wall time, the ratio recipe / loop of the medians and the median of per-step ratios
(target <= 1.05). The two arms draw different random batches of the same size from the same rows.

Usage::

    python benchmarks/recipe_step_overhead.py                      # 3 recipes, 3 warm-up + 30 timed steps
    python benchmarks/recipe_step_overhead.py --recipes vlm2vec --steps 40
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_overhead import cpu_model  # noqa: E402
from recipe_quality import quiet  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["e5v", "vlm2vec", "mme5"], choices=["e5v", "vlm2vec", "mme5"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per arm after warm-up (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per arm (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", default=None, help="where the embedded data/backbone go (default: a temp dir)")
    parser.add_argument("--target", type=float, default=1.05, help="target recipe/loop step-time ratio")
    return parser.parse_args()


def prepare(recipe: str, args: argparse.Namespace, workdir: Path):
    """(config, plan, training dataset, recipe model, loop model) built as run_stage builds them."""
    from transformers import set_seed

    from mm_st.training import CONFIGS, plan_stage
    from mm_st.training.data import training_dataset
    from mm_st.training.stage import build_stage_model

    config = CONFIGS[recipe].embedded_default(
        output_dir=str((workdir / recipe).resolve()), seed=args.seed, resume="never", save_steps=10**6,
        max_steps=args.warmup + args.steps, threads=args.threads)
    plan, named = plan_stage(config)
    set_seed(config.seed)
    model = build_stage_model(plan)
    set_seed(config.seed)
    loop_model = build_stage_model(plan)
    named = config.prepare(model, named, plan.context())  # the recipe's own preparation (mmE5 mining, E5-V cut), as run_stage
    return config, plan, training_dataset(named, config.batch_mixing, config.seed), model, loop_model


class Loop:
    """The hand-written ST loop: preprocess each column, loss, backward, clip, AdamW, scheduler."""

    def __init__(self, plan, model, loss, dataset, total_steps: int, batch_sampler) -> None:
        from transformers import get_scheduler

        c = plan.config
        self.model, self.loss, self.max_grad_norm = model, loss, c.max_grad_norm
        self.columns = dataset.column_names
        model.train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
        warmup = math.ceil(c.warmup * total_steps) if c.warmup < 1 else int(c.warmup)  # as transformers rounds
        self.scheduler = get_scheduler(c.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=total_steps)
        self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=lambda rows: rows)
        self.batches = iter(self.loader)
        self.losses: list[float] = []

    def step(self) -> float:
        try:
            rows = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            rows = next(self.batches)
        features = [self.model.preprocess([row[c] for row in rows]) for c in self.columns]
        loss = self.loss(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        return self.losses[-1]


def measure(recipe: str, args: argparse.Namespace, workdir: Path) -> dict:
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import TrainerCallback

    from mm_st.training.stage import build_loss, training_arguments

    config, plan, dataset, model, loop_model = prepare(recipe, args, workdir)
    trainer = SentenceTransformerTrainer(model=model, args=training_arguments(plan, False), train_dataset=dataset,
                                         loss=build_loss(plan, model))
    # the loop draws the trainer's batches: ST's batch sampler for these arguments, seeded as the trainer seeds it
    generator = torch.Generator().manual_seed(config.seed)
    sampler = trainer.get_batch_sampler(dataset, batch_size=plan.per_device_batch, drop_last=True,
                                        valid_label_columns=trainer.data_collator.valid_label_columns,
                                        generator=generator, seed=config.seed)
    loop = Loop(plan, loop_model, build_loss(plan, loop_model), dataset, args.warmup + args.steps, sampler)
    times = {"recipe": [], "loop": [], "recipe_wall": [], "loop_wall": []}
    mark = {}

    class Interleave(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if "cpu" not in mark:  # first step: start the clock here (dataloader set-up excluded)
                mark["cpu"], mark["wall"] = time.process_time(), time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            cpu, wall = time.process_time(), time.perf_counter()
            timed = state.global_step > args.warmup
            if timed:
                times["recipe"].append(cpu - mark["cpu"])
                times["recipe_wall"].append(wall - mark["wall"])
            loop_cpu, loop_wall = time.process_time(), time.perf_counter()
            loop.step()
            if timed:
                times["loop"].append(time.process_time() - loop_cpu)
                times["loop_wall"].append(time.perf_counter() - loop_wall)
            mark["cpu"], mark["wall"] = time.process_time(), time.perf_counter()

    trainer.add_callback(Interleave())
    trainer.train()
    logged = [(h["step"], float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    out = {k: v for k, v in times.items()}
    out["columns"], out["batch"], out["loss"] = dataset.column_names, plan.per_device_batch, plan.loss
    out["params"] = sum(p.numel() for p in model.parameters())
    out["logging_steps"] = config.logging_steps
    out["first_loss"] = (logged[0][1], loop.losses[0])
    last_step, last_loss = logged[-1]  # the trainer logs the mean loss since its previous log
    previous = logged[-2][0] if len(logged) > 1 else 0
    out["last_loss"] = (last_step, last_loss, statistics.mean(loop.losses[previous:last_step]))
    return out


def summary(name: str, t: dict, target: float) -> tuple[str, float]:
    cpu_r, loop_c = statistics.median(t["recipe"]), statistics.median(t["loop"])
    wall_r, loop_w = statistics.median(t["recipe_wall"]), statistics.median(t["loop_wall"])
    paired = statistics.median(a / b for a, b in zip(t["recipe"], t["loop"]))
    ratio = cpu_r / loop_c
    line = (f"| {name} | {t['batch']} | {len(t['recipe'])} | {cpu_r:.3f} | {loop_c:.3f} | **{ratio:.3f}** | {paired:.3f} | "
            f"{wall_r:.3f} / {loop_w:.3f} = {wall_r / loop_w:.3f} | {'met' if ratio <= target else 'NOT met'} |")
    return line, ratio


def main() -> None:
    args = parse_args()
    quiet(args.threads)
    import sentence_transformers
    import transformers

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="recipe-step-"))
    start = time.perf_counter()
    results = {recipe: measure(recipe, args, workdir) for recipe in args.recipes}
    print("\n| recipe | batch | timed steps | recipe CPU s/step | loop CPU s/step | recipe / loop (CPU medians) | "
          "median per-step ratio | wall medians recipe / loop | target <= %.2f |" % args.target)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for recipe, t in results.items():
        print(summary(recipe, t, args.target)[0])
    print()
    for recipe, t in results.items():
        print(f"- {recipe}: {t['params']:,} parameters, columns {t['columns']}, {t['loss']}, trainer logs every "
              f"{t['logging_steps']} steps; step-1 loss trainer {t['first_loss'][0]:.4f}, loop {t['first_loss'][1]:.4f}; "
              f"mean loss logged at step {t['last_loss'][0]} trainer {t['last_loss'][1]:.4f}, loop {t['last_loss'][2]:.4f}")
        print(f"  raw CPU s recipe {[round(x, 3) for x in t['recipe']]}")
        print(f"  raw CPU s loop   {[round(x, 3) for x in t['loop']]}")
    print(f"- {args.warmup} warm-up + {args.steps} timed steps per arm, interleaved (recipe step k, then loop step k); "
          f"{torch.get_num_threads()} torch thread(s); CPU {cpu_model()}; {os.cpu_count()} cores; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}, "
          f"Python {platform.python_version()}; wall {time.perf_counter() - start:.0f} s")
    print(f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`")


if __name__ == "__main__":
    main()
