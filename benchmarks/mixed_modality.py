"""Modality-grouped batching vs one padded batch, on a batch mixing text-only and image+text rows.

Model: a random Qwen2-VL-shaped checkpoint built offline (``encode_overhead.build_checkpoint``,
default shape ``7m``), its image processor set to resize every image to ``--image-side`` pixels square
(448 px: 1024 patches, 256 image tokens), so an image+text row has >= 10x the tokens of a text row.
E5-V prompts. Batch: ``--batch-size`` rows, half text-only (emoji names), half image+text
(emoji + name), interleaved.

Measured in one run, variants interleaved (order rotated each repeat), medians of process CPU time
(one torch thread: the work done, robust to other processes sharing the cores; wall ratios also printed):

(a) training step = ``model.preprocess`` of two columns + ``MultimodalInfoNCELoss`` + backward, with
    anchor and positive columns mixed in opposite ways (a text anchor has an image+text positive and
    vice versa, like MMEB's t2i / i2t rows):
    - ``grouped`` vs ``ungrouped`` (``model.group_modalities = False``: one padded tensor per column);
    - ``halves``: the two homogeneous half-batches (text anchors; image+text anchors) run alone, summed;
    - control: a homogeneous batch (every anchor text, every positive image+text), grouped vs ungrouped.
(b) ``model.encode(batch, batch_size=B)``: mixed batch grouped vs ungrouped; homogeneous control.

Also reports the padded token positions (language-model input positions holding padding) each way.
Targets (issue 14): grouped step <= 0.6x ungrouped; grouped step <= 1.1x the halves' sum; control
within 2%.

Usage::

    python benchmarks/mixed_modality.py                     # 1 thread, 5 repeats
    python benchmarks/mixed_modality.py --shape 7m --repeats 7 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_overhead import SHAPES, build_checkpoint, cpu_model  # noqa: E402

# Vision-light variant: same LM as 7m, a 2-block vision tower, so the vision cost per image token relative
# to the LM is close to Qwen2-VL-7B's (see RESULTS.md); the 7m shape's tower is relatively 3x heavier.
SHAPES.setdefault("7m-lm", dict(SHAPES["7m"], vision=dict(depth=1, embed_dim=64, num_heads=2, mlp_ratio=4)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-side", type=int, default=448, help="images resized to side x side (multiple of 28)")
    parser.add_argument("--shape", choices=tuple(SHAPES), default="7m")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def set_image_side(directory: Path, side: int) -> None:
    """Make the Qwen2-VL image processor resize every image to ``side`` x ``side`` pixels."""
    path = directory / "processor_config.json"
    config = json.loads(path.read_text())
    config["image_processor"]["size"] = {"shortest_edge": side * side, "longest_edge": side * side}
    path.write_text(json.dumps(config, indent=2))


def padded_positions(features: dict) -> tuple[int, int]:
    """(padding positions, real token positions) of the language-model input, over all sub-batches."""
    parts = features.get("mm_st_groups", [features])
    mask_sums = [part["attention_mask"] for part in parts]
    total = sum(mask.numel() for mask in mask_sums)
    real = sum(int(mask.sum()) for mask in mask_sums)
    return total - real, real


def main() -> None:
    args = parse_args()
    assert args.batch_size % 2 == 0 and args.image_side % 28 == 0
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    from mm_st import build_model
    from mm_st.data import load_emoji
    from mm_st.losses import MultimodalInfoNCELoss

    workdir = Path(tempfile.mkdtemp(prefix="mm_st_mixed_"))
    num_params = build_checkpoint(args.shape, args.seed, workdir, "cpu", torch.float32)
    set_image_side(workdir, args.image_side)
    model = build_model(str(workdir), recipe="e5v")
    loss_fn = MultimodalInfoNCELoss(model, temperature=0.05)

    data = load_emoji("train").select(range(args.batch_size))
    names = data["name_en"]
    images = [image.convert("RGB") for image in data["image"]]
    pairs = [{"text": name, "image": image} for name, image in zip(names, images)]
    half = args.batch_size // 2
    # Row i: even rows have a text anchor and an image+text positive, odd rows the reverse.
    anchors = [names[i] if i % 2 == 0 else pairs[i] for i in range(args.batch_size)]
    positives = [pairs[i] if i % 2 == 0 else names[i] for i in range(args.batch_size)]
    text_rows = list(range(0, args.batch_size, 2))
    image_rows = list(range(1, args.batch_size, 2))
    control = ([names[i] for i in range(args.batch_size)], pairs)  # homogeneous columns

    def timed(fn) -> tuple[float, float]:
        """(process CPU seconds, wall seconds) of ``fn()``."""
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        return time.process_time() - cpu, time.perf_counter() - wall

    def run_step(columns) -> None:
        model.zero_grad(set_to_none=True)
        features = [model.preprocess(column) for column in columns]
        loss_fn(features, None).backward()

    def step(columns, grouped: bool) -> tuple[float, float]:
        model.group_modalities = grouped
        return timed(lambda: run_step(columns))

    def encode(inputs, grouped: bool) -> tuple[float, float]:
        model.group_modalities = grouped
        model.eval()
        try:
            return timed(lambda: model.encode(inputs, batch_size=len(inputs), convert_to_numpy=True))
        finally:
            model.train()

    def halves() -> tuple[float, float]:
        first = step(([anchors[i] for i in text_rows], [positives[i] for i in text_rows]), True)
        second = step(([anchors[i] for i in image_rows], [positives[i] for i in image_rows]), True)
        return first[0] + second[0], first[1] + second[1]

    variants = {
        "step grouped": lambda: step((anchors, positives), True),
        "step ungrouped": lambda: step((anchors, positives), False),
        "step halves (sum)": halves,
        "step control grouped": lambda: step(control, True),
        "step control ungrouped": lambda: step(control, False),
        "encode grouped": lambda: encode(anchors, True),
        "encode ungrouped": lambda: encode(anchors, False),
        "encode control grouped": lambda: encode(pairs, True),
        "encode control ungrouped": lambda: encode(pairs, False),
    }

    # Token counts and padding, and a check that both layouts give the same embeddings.
    model.group_modalities = False
    text_tokens = int(model.preprocess([names[0]])["attention_mask"].sum())
    pair_tokens = int(model.preprocess([pairs[0]])["attention_mask"].sum())
    padding = {}
    for grouped in (True, False):
        model.group_modalities = grouped
        padding[grouped] = [padded_positions(model.preprocess(column)) for column in (anchors, positives)]
    model.eval()
    model.group_modalities = True
    with_groups = model.encode(anchors, batch_size=args.batch_size, convert_to_tensor=True)
    model.group_modalities = False
    without = model.encode(anchors, batch_size=args.batch_size, convert_to_tensor=True)
    max_diff = float((with_groups - without).abs().max())
    model.train()

    model.group_modalities = True
    for fn in variants.values():  # warm-up
        fn()
    times, walls = {name: [] for name in variants}, {name: [] for name in variants}
    names_order = list(variants)
    for repeat in range(args.repeats):
        shift = repeat % len(names_order)
        for name in names_order[shift:] + names_order[:shift]:  # rotate: no position bias
            cpu, wall = variants[name]()
            times[name].append(cpu)
            walls[name].append(wall)
    # Ratios use process CPU time: with one torch thread it is the work done, and unlike wall time it is
    # barely affected by other processes competing for the cores. Wall-time ratios are printed too.
    med = {name: statistics.median(values) for name, values in times.items()}
    wall_med = {name: statistics.median(values) for name, values in walls.items()}

    step_ratio = med["step grouped"] / med["step ungrouped"]
    halves_ratio = med["step grouped"] / med["step halves (sum)"]
    control_ratio = med["step control grouped"] / med["step control ungrouped"]
    encode_ratio = med["encode grouped"] / med["encode ungrouped"]
    encode_control = med["encode control grouped"] / med["encode control ungrouped"]
    paired_step = statistics.median(g / u for g, u in zip(times["step grouped"], times["step ungrouped"]))
    wall_ratios = {
        "step grouped/ungrouped": wall_med["step grouped"] / wall_med["step ungrouped"],
        "step grouped/halves": wall_med["step grouped"] / wall_med["step halves (sum)"],
        "step control": wall_med["step control grouped"] / wall_med["step control ungrouped"],
        "encode grouped/ungrouped": wall_med["encode grouped"] / wall_med["encode ungrouped"],
        "encode control": wall_med["encode control grouped"] / wall_med["encode control ungrouped"],
    }
    pad = {g: [p for p, _ in padding[g]] for g in padding}
    real = [r for _, r in padding[True]]

    import sentence_transformers
    import transformers

    n = args.batch_size
    print(f"model: Qwen2-VL-shaped random ({args.shape}), {num_params:,} parameters; images {args.image_side}px "
          f"square; text row {text_tokens} tokens, image+text row {pair_tokens} tokens "
          f"({pair_tokens / text_tokens:.1f}x); batch {n} ({half} text + {half} image+text per column)")
    print(f"embeddings grouped vs ungrouped (mixed encode): max abs diff {max_diff:.2e}\n")
    print("Medians of process CPU time (1 torch thread).\n")
    print("| measurement | grouped | ungrouped | grouped / ungrouped |")
    print("|---|---:|---:|---:|")
    print(f"| training step, mixed batch (CPU s) | {med['step grouped']:.3f} | {med['step ungrouped']:.3f} | "
          f"**{step_ratio:.3f}** (paired {paired_step:.3f}) |")
    print(f"| training step, two homogeneous halves alone, summed (CPU s) | {med['step halves (sum)']:.3f} | | "
          f"grouped / halves **{halves_ratio:.3f}** |")
    print(f"| training step, homogeneous control (CPU s) | {med['step control grouped']:.3f} | "
          f"{med['step control ungrouped']:.3f} | {control_ratio:.3f} |")
    print(f"| encode, mixed batch (inputs per CPU s) | {n / med['encode grouped']:.1f} | {n / med['encode ungrouped']:.1f} | "
          f"time {encode_ratio:.3f} (throughput x{1 / encode_ratio:.2f}) |")
    print(f"| encode, homogeneous control (inputs per CPU s) | {n / med['encode control grouped']:.1f} | "
          f"{n / med['encode control ungrouped']:.1f} | time {encode_control:.3f} |")
    print(f"| padded LM positions, anchor + positive column | {sum(pad[True])} | {sum(pad[False])} | "
          f"(real tokens {sum(real)}) |")
    print()
    print(f"- targets: step <= 0.6x ungrouped: {'met' if step_ratio <= 0.6 else 'NOT met'}; "
          f"<= 1.1x halves: {'met' if halves_ratio <= 1.1 else 'NOT met'}; "
          f"control within 2%: step {'met' if control_ratio <= 1.02 else 'NOT met'}, "
          f"encode {'met' if encode_control <= 1.02 else 'NOT met'}")
    print(f"- repeats {args.repeats} per variant (interleaved, rotated order, medians), 1 warm-up; "
          f"{torch.get_num_threads()} torch thread(s); CPU {cpu_model()}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}, "
          f"Python {platform.python_version()}")
    print("- wall-time ratios (noisy on a shared machine): " + json.dumps({k: round(v, 3) for k, v in wall_ratios.items()}))
    print("- raw CPU times (s): " + json.dumps({k: [round(t, 3) for t in v] for k, v in times.items()}))
    print("- raw wall times (s): " + json.dumps({k: [round(t, 3) for t in v] for k, v in walls.items()}))
    print(f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`")


if __name__ == "__main__":
    main()
