"""Peak memory of a training step: ``CachedMultimodalInfoNCELoss`` (GradCache) vs. ``MultimodalInfoNCELoss``.

For each loss in {cached (``--mini-batch-size``, default 8), non-cached} and each batch size in
``--batch-sizes`` (default 32 and 256), one training step on (emoji image anchor, English name
positive) pairs is measured in a FRESH subprocess, so peaks of different configurations never mix.
Step = ``model.preprocess`` of both columns + loss forward + backward + AdamW step + ``zero_grad``.

Model: a random Qwen2-VL-shaped checkpoint built once by the parent with
``benchmarks/encode_overhead.py``'s ``build_checkpoint`` (its ``SHAPES``, plus the larger ``30m`` shape
defined here), E5-V recipe, fp32. The bigger model makes activation memory dominate the input/data
baseline.

Method (CPU, default): in the child, after building the model, loading the data and one warm-up step
at batch 8 with the same loss (which also allocates the AdamW state and the gradient buffers),
``gc.collect()`` + ``malloc_trim(0)``; then ``rss0 = VmRSS``. The kernel's peak-RSS counter (VmHWM
in ``/proc/self/status``) is reset by writing ``5`` to ``/proc/self/clear_refs`` right before the
preprocess phase and again right before the loss phase; peak growth = max(VmHWM of both phases) -
rss0 (the loss phase alone, minus the RSS after preprocessing, is reported too). Torch's CPU
tensors above glibc's mmap threshold are mmapped/unmapped, so RSS follows them closely; tracemalloc
would not see them. Fallback where ``clear_refs`` is not writable: ``ru_maxrss`` growth, which
reads 0 when the step does not exceed the earlier high-water mark.

CUDA (``--device cuda``): inputs are preprocessed on CPU and moved to the GPU (not counted);
``torch.cuda.reset_peak_memory_stats()`` before the step, peak growth =
``max_memory_allocated() - memory_allocated()`` at the start of the step.

Usage::

    .venv/bin/python benchmarks/gradcache_memory.py                       # 7m model, CPU, 1 thread
    .venv/bin/python benchmarks/gradcache_memory.py --shape 30m
    .venv/bin/python benchmarks/gradcache_memory.py --device cuda --shape 2b
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encode_overhead  # noqa: E402  (build_checkpoint, SHAPES, cpu_model; not modified)
from peak_memory import reset_hwm as _reset_hwm, status as _status, trim as _trim  # noqa: E402

SHAPES = dict(encode_overhead.SHAPES)
SHAPES["30m"] = dict(
    text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
              num_key_value_heads=2, head_dim=64),
    mrope_section=[8, 12, 12],
    vision=dict(depth=8, embed_dim=256, num_heads=4, mlp_ratio=4),
)
encode_overhead.SHAPES.update(SHAPES)  # in-memory only, so build_checkpoint knows "30m"

LOSSES = ("cached", "plain")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--shape", choices=tuple(SHAPES), default="7m", help="model shape (default 7m)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--mini-batch-size", type=int, default=8, help="GradCache mini-batch (default 8)")
    parser.add_argument("--warmup-batch-size", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=1.3, help="target cached peak ratio largest/smallest batch")
    # child mode (internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--loss", choices=LOSSES, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()




def child(args: argparse.Namespace) -> None:
    import resource

    torch.set_num_threads(args.threads)
    quiet()
    from mm_st import build_model
    from mm_st.data import load_emoji
    from mm_st.losses import CachedMultimodalInfoNCELoss, MultimodalInfoNCELoss

    device = args.device
    data = load_emoji("train")
    rows = data.select(range(max(args.batch_size, args.warmup_batch_size)))
    images, names = list(rows["image"]), list(rows["name_en"])
    torch.manual_seed(args.seed)
    model = build_model(args.checkpoint, recipe="e5v", device=device)
    model.train()
    if args.loss == "cached":
        loss_fn = CachedMultimodalInfoNCELoss(model, temperature=args.temperature, mini_batch_size=args.mini_batch_size)
    else:
        loss_fn = MultimodalInfoNCELoss(model, temperature=args.temperature)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def to_device(features: dict) -> dict:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def preprocess(n: int) -> list[dict]:
        return [to_device(model.preprocess(images[:n])), to_device(model.preprocess(names[:n]))]

    def loss_step(features) -> float:
        loss = loss_fn(features, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    loss_step(preprocess(args.warmup_batch_size))  # warm-up: AdamW state, grads, allocator, lazy inits
    _trim()
    result = {"loss": args.loss, "batch": args.batch_size}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start = time.perf_counter()
        features = preprocess(args.batch_size)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        value = loss_step(features)
        torch.cuda.synchronize()
        result.update(method="cuda max_memory_allocated", peak=torch.cuda.max_memory_allocated() - base,
                      loss_phase_peak=torch.cuda.max_memory_allocated() - base, baseline=base)
    else:
        rss0 = _status("VmRSS")
        maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        if _reset_hwm():
            features = preprocess(args.batch_size)
            hwm_prep = _status("VmHWM")
            rss_prep = _status("VmRSS")
            _reset_hwm()
            value = loss_step(features)
            hwm_loss = _status("VmHWM")
            result.update(method="VmHWM (clear_refs reset) - VmRSS", peak=max(hwm_prep, hwm_loss) - rss0,
                          loss_phase_peak=hwm_loss - rss_prep, baseline=rss0)
        else:
            features = preprocess(args.batch_size)
            value = loss_step(features)
            maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            result.update(method="ru_maxrss growth", peak=maxrss1 - maxrss0, loss_phase_peak=float("nan"),
                          baseline=maxrss0)
    result.update(seconds=time.perf_counter() - start, loss_value=value,
                  params=sum(p.numel() for p in model.parameters()),
                  seq_len=int(features[0]["input_ids"].shape[1]), pixel_rows=int(features[0]["pixel_values"].shape[0]))
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    quiet()
    import sentence_transformers
    import transformers

    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mm_st_gradcache_"))
    results = []
    try:
        num_params = encode_overhead.build_checkpoint(args.shape, args.seed, workdir, args.device, torch.float32)
        for loss in LOSSES:
            for batch in args.batch_sizes:
                cmd = [sys.executable, __file__, "--child", "--checkpoint", str(workdir), "--loss", loss,
                       "--batch-size", str(batch), "--device", args.device, "--threads", str(args.threads),
                       "--mini-batch-size", str(args.mini_batch_size), "--warmup-batch-size",
                       str(args.warmup_batch_size), "--temperature", str(args.temperature), "--seed", str(args.seed)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode or not lines:
                    sys.exit(f"child failed ({loss}, {batch}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                results.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    mib = 1024 * 1024
    lo, hi = min(args.batch_sizes), max(args.batch_sizes)
    by = {(r["loss"], r["batch"]): r for r in results}
    label = {"cached": f"CachedMultimodalInfoNCELoss(mini_batch_size={args.mini_batch_size})",
             "plain": "MultimodalInfoNCELoss"}
    print("## gradcache_memory.py — peak memory of a training step, GradCache vs. non-cached InfoNCE\n")
    print(f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- machine: {encode_overhead.cpu_model()}, {platform.system()} {platform.machine()}, "
          f"Python {platform.python_version()}; device {args.device}")
    print(f"- torch {torch.__version__} (threads: {args.threads}), transformers {transformers.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}")
    print(f"- model: random Qwen2-VL-shaped ({args.shape}), {num_params:,} parameters ({num_params / 1e6:.2f}M), "
          f"E5-V recipe, fp32")
    print(f"- inputs: (emoji image anchor 64x64, English name positive); anchor seq len "
          f"{by[('plain', hi)]['seq_len']} tokens at batch {hi}; temperature {args.temperature}, mask_duplicates=True")
    print(f"- method: {results[0]['method']}; each (loss, batch) in a fresh subprocess after a warm-up step at "
          f"batch {args.warmup_batch_size}; step = preprocess + forward + loss + backward + AdamW; "
          f"total runtime {elapsed:.1f}s\n")
    print(f"| loss | batch | peak growth MiB (step) | of which loss phase MiB | baseline MiB | step s | ratio {hi}/{lo} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios = {}
    for loss in LOSSES:
        for batch in sorted(args.batch_sizes):
            r = by[(loss, batch)]
            ratio = ""
            if batch == hi and hi != lo:
                ratios[loss] = r["peak"] / by[(loss, lo)]["peak"]
                loss_ratio = r["loss_phase_peak"] / by[(loss, lo)]["loss_phase_peak"]
                ratio = f"**{ratios[loss]:.2f}** (loss phase {loss_ratio:.2f})"
            print(f"| {label[loss]} | {batch} | {r['peak'] / mib:.1f} | {r['loss_phase_peak'] / mib:.1f} | "
                  f"{r['baseline'] / mib:.0f} | {r['seconds']:.2f} | {ratio} |")
    if "cached" in ratios:
        print(f"\nTarget: cached ratio <= {args.target}; got {ratios['cached']:.2f} -> "
              f"{'MET' if ratios['cached'] <= args.target else 'NOT MET'} (non-cached: {ratios.get('plain', float('nan')):.2f}).")
    same = abs(by[("cached", hi)]["loss_value"] - by[("plain", hi)]["loss_value"])
    print(f"Loss value at batch {hi}: cached {by[('cached', hi)]['loss_value']:.5f}, "
          f"non-cached {by[('plain', hi)]['loss_value']:.5f} (|diff| {same:.1e}).")


if __name__ == "__main__":
    main()
