"""Every GPU figure of mm_st in one call: encode, training step, pooling, grouping and mining on one GPU.

Built for a GPU machine lent for ~15 minutes with nothing reachable (no Hub, no registry): the models are
random, built on the GPU from configs of real shapes (no download), and every part has a time cap so the
whole run fits ``--budget-s`` (default 480 s on one H100) by construction. After each part the results so
far are written, so a run stopped early still leaves what it measured.

Parts (each its own cap; a part that does not fit the time left is skipped with that reason):

- ``encode``: inputs/s and tokens/s of mm_st's ``encode`` (E5-V prompts) vs a hand-written transformers loop
  (processor on the literal prompt strings, ``AutoModel`` forward, last token, L2 norm) on the same batches,
  for text, image and image+text inputs, bf16 + SDPA; a Qwen2-VL-2B-shaped and a LLaVA-NeXT-7B-shaped model
  (Vicuna-7B language model, CLIP ViT-L/14-336 tower, LLaVA-NeXT's 336-px any-res grid). Goal: ratio >= 0.99.
- ``train``: one LoRA training step (``model.preprocess`` of both columns + loss + backward + AdamW) on
  (image, name) pairs at global batch 256 and 1024: ``CachedMultimodalInfoNCELoss`` (GradCache,
  ``--mini-batch-size``) vs ``MultimodalInfoNCELoss`` (an out-of-memory step is recorded as such); step time,
  peak memory (``max_memory_allocated`` growth), tokens/s.
- ``pooling``: the same training step (batch ``--pooling-batch``, text pairs: emoji name -> keywords, so that
  images' long sequences do not hide the head's cost) with MM-Embed's latent-attention pooling (NV-Embed's sizes)
  vs last-token pooling on the 7B-shaped model (the 1.15x target the CPU could only estimate by arithmetic).
- ``grouping``: ``encode`` of a batch mixing text rows and image+text rows, modality-grouped vs one padded batch.
- ``mining``: ``mm_st.mining.mine_hard_negatives`` queries/s against a random pool of ``--pool`` candidates
  (default 10^6) with precomputed embeddings on the GPU (window 46-50, MM-Embed's type-2 negatives).

Usage (from the repository root; on the GPU machine ``benchmarks/gpu/run.sh`` installs the carried wheels first)::

    python benchmarks/gpu/run.py --out gpu-results           # the full run (CUDA, bf16)
    python benchmarks/gpu/run.py --smoke --out /tmp/smoke     # CPU, tiny shapes, seconds: the suite runs this

Writes ``<out>/gpu_results.json`` (machine, versions, every figure, skipped parts with their reason) and
``<out>/gpu_results.md`` (a short table). The figures go to benchmarks/RESULTS.md's GPU section.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere: mm_st from this checkout
    sys.path.insert(0, str(ROOT))

# Real shapes. Text/vision entries override the tiny model's config (mm_st.testing), "processor" its
# processor_config.json's image processor, "config" the top-level config. The vocabulary stays the tiny one.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2_vl-2b": dict(  # Qwen2-VL-2B-Instruct
        family="qwen2_vl",
        text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, head_dim=128),
        mrope_section=[16, 24, 24],
        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4),
    ),
    "llava_next-7b": dict(  # llava-v1.6-vicuna-7b: Vicuna-7B + CLIP ViT-L/14 at 336 px, any-res grid
        family="llava_next",
        text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, head_dim=128),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768),
        config=dict(image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
                    image_seq_length=576),
        processor=dict(crop_size={"height": 336, "width": 336}, size={"shortest_edge": 336},
                       image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]),
    ),
    # --smoke: the tiny models as they are (CPU, seconds)
    "qwen2_vl-tiny": dict(family="qwen2_vl"),
    "llava_next-tiny": dict(family="llava_next"),
}

# Per-part caps (seconds) of the full run; they sum to less than the default budget, leaving the model builds'
# share inside each part's cap. --smoke scales them down.
CAPS = {"encode": 170, "train": 130, "pooling": 70, "grouping": 40, "mining": 40}


@dataclass
class Context:
    args: argparse.Namespace
    device: str
    dtype: torch.dtype
    workdir: Path
    deadline: float  # time.monotonic() at which the whole run must end
    built: dict[str, Path] = field(default_factory=dict)

    def left(self) -> float:
        return self.deadline - time.monotonic()


class OutOfTime(Exception):
    """A part reached its cap; what it measured so far is kept."""


def _out_of_time(signum, frame):
    raise OutOfTime()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, small batches: checks the script runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_results.json / gpu_results.md")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole run's time limit (default 480)")
    parser.add_argument("--parts", nargs="+", default=list(CAPS), choices=list(CAPS))
    parser.add_argument("--batch-size", type=int, default=64, help="encode batch (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per path (default 5)")
    parser.add_argument("--train-batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--mini-batch-size", type=int, default=64, help="GradCache mini-batch (default 64)")
    parser.add_argument("--pooling-batch", type=int, default=128)
    parser.add_argument("--pool", type=int, default=1_000_000, help="mining pool size (default 10^6)")
    parser.add_argument("--queries", type=int, default=20_000, help="mining queries (default 20,000)")
    parser.add_argument("--min-free-gib", type=float, default=40.0, help="refuse to start below this free GPU memory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.budget_s = min(args.budget_s, 300.0)
        args.batch_size, args.repeats, args.train_batches = 4, 1, [8, 16]
        args.mini_batch_size, args.pooling_batch, args.pool, args.queries = 4, 4, 2_000, 50
    return args


def quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def preflight(args: argparse.Namespace) -> tuple[str, torch.dtype, dict[str, Any]]:
    """Device, dtype and what was checked; exits with one line when the machine cannot run the full plan."""
    if args.smoke:
        return "cpu", torch.float32, {"smoke": True}
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device (torch.cuda.is_available() is False); --smoke runs on the CPU")
    if not torch.cuda.is_bf16_supported():
        sys.exit(f"error: {torch.cuda.get_device_name()} has no bfloat16 support")
    free, total = torch.cuda.mem_get_info()
    if free / 2**30 < args.min_free_gib:
        sys.exit(f"error: {free / 2**30:.1f} GiB free on the GPU, the plan needs {args.min_free_gib:.0f} "
                 "(--min-free-gib to change)")
    return "cuda", torch.bfloat16, {"gpu": torch.cuda.get_device_name(), "free_gib": round(free / 2**30, 1),
                                    "total_gib": round(total / 2**30, 1)}


def build_shaped(ctx: Context, name: str) -> Path:
    """Save a random model of shape ``name`` (built on the device, ``ctx.dtype``) with the tiny model's
    tokenizer and processor; built once per run."""
    if name in ctx.built:
        return ctx.built[name]
    from transformers import AutoConfig, AutoModel

    from mm_st.testing import tiny_model

    spec = SHAPES[name]
    tiny = Path(tiny_model(spec["family"]))
    config = AutoConfig.from_pretrained(tiny)
    text, vision = config.get_text_config(), config.vision_config
    for key, value in spec.get("text", {}).items():
        setattr(text, key, value)
    if "text" in spec and hasattr(text, "layer_types"):
        text.layer_types = ["full_attention"] * text.num_hidden_layers
    if "mrope_section" in spec:
        text.rope_parameters = {**text.rope_parameters, "mrope_section": list(spec["mrope_section"])}
    for key, value in spec.get("vision", {}).items():
        setattr(vision, key, value)
    if spec["family"] == "qwen2_vl" and "vision" in spec:
        vision.hidden_size = text.hidden_size  # the merger's output is the LM's width
    for key, value in spec.get("config", {}).items():
        setattr(config, key, value)
    directory = ctx.workdir / name
    torch.manual_seed(ctx.args.seed)
    with torch.device(ctx.device):  # a 7B random init on the CPU takes minutes
        model = AutoModel.from_config(config, dtype=ctx.dtype)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory)
    del model
    for file in tiny.iterdir():
        if file.suffix != ".safetensors" and file.name != "config.json":
            shutil.copy(file, directory / file.name)
    if "processor" in spec:
        path = directory / "processor_config.json"
        processor = json.loads(path.read_text())
        processor["image_processor"].update(spec["processor"])
        path.write_text(json.dumps(processor, indent=2))
    free_memory(ctx)
    ctx.built[name] = directory
    print(f"[gpu] built {name}: {params / 1e9:.2f}B parameters", flush=True)
    return directory


def free_memory(ctx: Context) -> None:
    import gc

    gc.collect()
    if ctx.device == "cuda":
        torch.cuda.empty_cache()


def sync(ctx: Context) -> None:
    if ctx.device == "cuda":
        torch.cuda.synchronize()


def timed(ctx: Context, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(ctx)
    start = time.perf_counter()
    out = fn()
    sync(ctx)
    return time.perf_counter() - start, out


def interleaved(ctx: Context, cap_end: float, paths: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    """One warm-up call each, then ``repeats`` rounds (order reversed every other round); stops at the cap."""
    for fn in paths.values():
        fn()
    times: dict[str, list[float]] = {key: [] for key in paths}
    order = list(paths)
    for repeat in range(ctx.args.repeats):
        for key in order if repeat % 2 == 0 else order[::-1]:
            if time.monotonic() > cap_end and all(times.values()):
                return times
            times[key].append(timed(ctx, paths[key])[0])
    return times


def emoji_rows(n: int) -> tuple[list, list[str]]:
    from mm_st.data import load_emoji

    data = load_emoji("train")
    rows = data.select([i % len(data) for i in range(n)])
    return list(rows["image"]), list(rows["name_en"])


def part_encode(ctx: Context, cap_end: float) -> dict[str, Any]:
    from transformers import AutoModel, AutoProcessor

    from mm_st import build_model, templates

    shapes = ["qwen2_vl-tiny", "llava_next-tiny"] if ctx.args.smoke else ["qwen2_vl-2b", "llava_next-7b"]
    images, names = emoji_rows(ctx.args.batch_size)
    results: dict[str, Any] = {}
    for shape in shapes:
        if time.monotonic() > cap_end:
            results[shape] = {"skipped": "part cap reached"}
            continue
        path, family = build_shaped(ctx, shape), SHAPES[shape]["family"]
        st_model = build_model(str(path), recipe="e5v", dtype=ctx.dtype, device=ctx.device,
                               attn_implementation="sdpa").eval()
        processor = AutoProcessor.from_pretrained(path)
        processor.tokenizer.padding_side = "left"
        hf_model = AutoModel.from_pretrained(path, dtype=ctx.dtype, attn_implementation="sdpa").to(ctx.device).eval()
        cases = {"text": ([*names], [None] * len(names)), "image": ([None] * len(names), images),
                 "image+text": ([*names], images)}
        for modality, (texts, pics) in cases.items():
            if time.monotonic() > cap_end:
                results.setdefault(shape, {})[modality] = {"skipped": "part cap reached"}
                continue
            inputs = [t if p is None else (p if t is None else {"text": t, "image": p}) for t, p in zip(texts, pics)]
            prompts = [templates.render_prompt("e5v", family, text=t, num_images=int(p is not None))
                       for t, p in zip(texts, pics)]

            def hand():
                kwargs = {"images": pics} if pics[0] is not None else {}
                features = processor(text=prompts, padding=True, return_tensors="pt", **kwargs).to(ctx.device)
                with torch.inference_mode():
                    hidden = hf_model(**features, use_cache=False).last_hidden_state[:, -1]
                    return torch.nn.functional.normalize(hidden.float(), dim=-1).cpu().numpy(), features

            def mm_st():
                return st_model.encode(inputs, batch_size=len(inputs), convert_to_numpy=True)

            hand_emb, features = hand()
            diff = float(np.abs(mm_st().astype(np.float32) - hand_emb).max())
            tokens = int(features["attention_mask"].sum())
            times = interleaved(ctx, cap_end, {"mm_st": mm_st, "hand": lambda: hand()[0]})
            med = {key: statistics.median(values) for key, values in times.items()}
            n = len(inputs)
            results.setdefault(shape, {})[modality] = {
                "batch": n, "tokens_per_batch": tokens, "mm_st_inputs_per_s": n / med["mm_st"],
                "hand_inputs_per_s": n / med["hand"], "mm_st_tokens_per_s": tokens / med["mm_st"],
                "ratio_mm_st_over_hand": med["hand"] / med["mm_st"], "max_abs_diff": diff,
                "repeats": len(times["mm_st"]), "raw_s": times}
        del st_model, hf_model
        free_memory(ctx)
    return results


def training_step(ctx: Context, model, loss_fn, images: list, names: list) -> tuple[float, float, int]:
    """(seconds, peak bytes over the step's start, input tokens) of preprocess + loss + backward + AdamW."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(n: int) -> int:
        def to_device(features: dict) -> dict:
            return {k: v.to(ctx.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

        features = [to_device(model.preprocess(images[:n])), to_device(model.preprocess(names[:n]))]
        loss_fn(features, None).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sum(int(f["attention_mask"].sum()) for f in features)

    step(min(8, len(images)))  # warm-up: AdamW state, lazy inits
    base = 0
    if ctx.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    seconds, tokens = timed(ctx, lambda: step(len(images)))
    peak = torch.cuda.max_memory_allocated() - base if ctx.device == "cuda" else 0
    return seconds, peak, tokens


def run_step(ctx: Context, path: Path, recipe: str, loss_name: str, batch: int, text_only: bool = False,
             **build) -> dict[str, Any]:
    from mm_st import build_model
    from mm_st.losses import CachedMultimodalInfoNCELoss, MultimodalInfoNCELoss

    images, names = emoji_rows(batch)
    if text_only:  # (name, keywords) pairs: short sequences, so the pooling head's share is the largest it gets
        from mm_st.data import load_emoji

        data = load_emoji("train")
        images = [", ".join(data[i % len(data)]["keywords_en"]) for i in range(batch)]
    torch.manual_seed(ctx.args.seed)
    model = build_model(str(path), recipe=recipe, dtype=ctx.dtype, device=ctx.device, attn_implementation="sdpa",
                        adapter={"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}, **build)
    model.train()
    if loss_name == "cached":
        loss_fn = CachedMultimodalInfoNCELoss(model, temperature=0.02, mini_batch_size=ctx.args.mini_batch_size)
    else:
        loss_fn = MultimodalInfoNCELoss(model, temperature=0.02)
    try:
        seconds, peak, tokens = training_step(ctx, model, loss_fn, images, names)
        return {"step_s": seconds, "peak_gib": peak / 2**30 if ctx.device == "cuda" else None,
                "tokens_per_s": tokens / seconds, "tokens": tokens}
    except torch.cuda.OutOfMemoryError:
        return {"oom": True}
    finally:
        del model, loss_fn
        free_memory(ctx)


def part_train(ctx: Context, cap_end: float) -> dict[str, Any]:
    path = build_shaped(ctx, "qwen2_vl-tiny" if ctx.args.smoke else "qwen2_vl-2b")
    results: dict[str, Any] = {}
    for batch in ctx.args.train_batches:
        for loss_name in ("cached", "plain"):
            key = f"{loss_name}@{batch}"
            if time.monotonic() > cap_end:
                results[key] = {"skipped": "part cap reached"}
                continue
            results[key] = run_step(ctx, path, "vlm2vec", loss_name, batch)
    return results


def part_pooling(ctx: Context, cap_end: float) -> dict[str, Any]:
    path = build_shaped(ctx, "llava_next-tiny" if ctx.args.smoke else "llava_next-7b")
    arms = {"lasttoken": {}, "latent_attention": {"pooling": "latent_attention"}}
    results: dict[str, Any] = {}
    for arm, build in arms.items():
        if time.monotonic() > cap_end:
            results[arm] = {"skipped": "part cap reached"}
            continue
        results[arm] = run_step(ctx, path, "mmembed", "plain", ctx.args.pooling_batch, text_only=True, **build)
    if all("step_s" in results.get(arm, {}) for arm in arms):
        results["ratio_latent_over_last"] = results["latent_attention"]["step_s"] / results["lasttoken"]["step_s"]
    return results


def part_grouping(ctx: Context, cap_end: float) -> dict[str, Any]:
    from mm_st import build_model

    path = build_shaped(ctx, "qwen2_vl-tiny" if ctx.args.smoke else "qwen2_vl-2b")
    model = build_model(str(path), recipe="e5v", dtype=ctx.dtype, device=ctx.device, attn_implementation="sdpa")
    images, names = emoji_rows(ctx.args.batch_size)
    batch = [name if i % 2 else {"text": name, "image": image} for i, (name, image) in enumerate(zip(names, images))]

    def encode(grouped: bool) -> Callable[[], Any]:
        def run():
            model.group_modalities = grouped
            return model.encode(batch, batch_size=len(batch))
        return run

    times = interleaved(ctx, cap_end, {"grouped": encode(True), "ungrouped": encode(False)})
    del model
    free_memory(ctx)
    med = {key: statistics.median(values) for key, values in times.items()}
    return {"batch": len(batch), "grouped_s": med["grouped"], "ungrouped_s": med["ungrouped"],
            "ratio_grouped_over_ungrouped": med["grouped"] / med["ungrouped"], "raw_s": times}


def part_mining(ctx: Context, cap_end: float) -> dict[str, Any]:
    from mm_st.mining import mine_hard_negatives

    generator = torch.Generator().manual_seed(ctx.args.seed)
    dim, pool, n = 1536, ctx.args.pool, ctx.args.queries
    corpus = torch.nn.functional.normalize(torch.randn(pool, dim, generator=generator), dim=-1)
    positives = torch.randint(0, pool, (n,), generator=generator)
    queries = torch.nn.functional.normalize(corpus[positives] + 0.5 * torch.randn(n, dim, generator=generator), dim=-1)
    corpus, queries = corpus.to(ctx.device, ctx.dtype), queries.to(ctx.device, ctx.dtype)
    seconds, _ = timed(ctx, lambda: mine_hard_negatives(
        positives=positives.tolist(), query_embeddings=queries, corpus_embeddings=corpus,
        query_ids=[f"q{i}" for i in range(n)], corpus_ids=[f"c{i}" for i in range(pool)],
        strategy="window", ranks=(46, 50), num_negatives=5, device=ctx.device, show_progress_bar=False,
        output_format="n-tuple", return_report=True))
    return {"pool": pool, "queries": n, "dim": dim, "seconds": seconds, "queries_per_s": n / seconds}


PARTS: dict[str, Callable[[Context, float], dict[str, Any]]] = {
    "encode": part_encode, "train": part_train, "pooling": part_pooling, "grouping": part_grouping,
    "mining": part_mining}


def machine(extra: dict[str, Any]) -> dict[str, Any]:
    import sentence_transformers
    import transformers

    return {**extra, "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "python": platform.python_version()}


def table(report: dict[str, Any]) -> str:
    """A short Markdown table of the headline figures."""
    lines = ["| part | case | figure |", "|---|---|---|"]
    for shape, cases in report["parts"].get("encode", {}).items():
        for modality, r in (cases.items() if isinstance(cases, dict) else []):
            if isinstance(r, dict) and "ratio_mm_st_over_hand" in r:
                lines.append(f"| encode | {shape} {modality} | {r['mm_st_inputs_per_s']:.1f} inputs/s, "
                             f"{r['mm_st_tokens_per_s']:.0f} tokens/s, mm_st/hand {r['ratio_mm_st_over_hand']:.3f} |")
    for key, r in report["parts"].get("train", {}).items():
        if not isinstance(r, dict):
            continue
        peak = "" if r.get("peak_gib") is None else f", peak {r['peak_gib']:.1f} GiB"
        figure = "out of memory" if r.get("oom") else (f"{r['step_s']:.2f} s/step{peak}, {r['tokens_per_s']:.0f} tokens/s"
                                                      if "step_s" in r else r.get("skipped", r))
        lines.append(f"| train (LoRA) | {key} | {figure} |")
    pooling = report["parts"].get("pooling", {})
    if "ratio_latent_over_last" in pooling:
        lines.append(f"| pooling | latent / last-token step | {pooling['ratio_latent_over_last']:.3f}x |")
    grouping = report["parts"].get("grouping", {})
    if "ratio_grouped_over_ungrouped" in grouping:
        lines.append(f"| grouping | grouped / ungrouped encode | {grouping['ratio_grouped_over_ungrouped']:.3f}x |")
    mining = report["parts"].get("mining", {})
    if "queries_per_s" in mining:
        lines.append(f"| mining | {mining['queries']} queries x {mining['pool']} pool | "
                     f"{mining['queries_per_s']:.0f} queries/s |")
    for part, reason in report["skipped"].items():
        lines.append(f"| {part} | skipped | {reason} |")
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_results.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_results.md").write_text(table(report))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.monotonic()
    torch.set_num_threads(1 if args.smoke else torch.get_num_threads())
    quiet()
    device, dtype, checked = preflight(args)
    scale = 0.25 if args.smoke else 1.0
    report: dict[str, Any] = {"machine": machine(checked), "command": " ".join(["python", "benchmarks/gpu/run.py",
                                                                                 *(argv or sys.argv[1:])]),
                              "budget_s": args.budget_s, "parts": {}, "skipped": {}, "errors": {}}
    workdir = Path(tempfile.mkdtemp(prefix="mm_st_gpu_"))
    signal.signal(signal.SIGALRM, _out_of_time)
    ctx = Context(args, device, dtype, workdir, deadline=start + args.budget_s)
    try:
        for name in args.parts:
            cap = CAPS[name] * scale
            if ctx.left() < cap * 0.5:
                report["skipped"][name] = f"{ctx.left():.0f} s left of the budget, the part's cap is {cap:.0f} s"
                continue
            part_start = time.monotonic()
            print(f"[gpu] {name} (cap {cap:.0f} s, {ctx.left():.0f} s left)", flush=True)
            # Measurements stop themselves at the cap; the alarm ends a part that overruns it by half (a slow build).
            signal.setitimer(signal.ITIMER_REAL, max(1.0, min(1.5 * cap, ctx.left())))
            try:
                report["parts"][name] = PARTS[name](ctx, min(part_start + cap, ctx.deadline))
            except OutOfTime:
                report["errors"][name] = f"stopped after {time.monotonic() - part_start:.0f} s (cap {cap:.0f} s)"
            except Exception as error:  # one part failing must not lose the others' figures
                report["errors"][name] = "".join(traceback.format_exception_only(error)).strip()
                traceback.print_exc()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            report["parts"].setdefault(name, {})["wall_s"] = time.monotonic() - part_start
            write(args.out, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["wall_s"] = time.monotonic() - start
    write(args.out, report)
    print(table(report), flush=True)
    return report


if __name__ == "__main__":
    main()
