"""Overhead of ``mm_st`` encode vs. a minimal hand-written transformers loop, on the same inputs.

Both paths embed the same batch of image+text inputs (emoji images + their English names) with the
E5-V recipe on a randomly initialised Qwen2-VL-shaped model built offline here:

- mm_st: ``build_model(path, recipe="e5v").encode(inputs, batch_size=B, convert_to_numpy=True)`` with
  ``{"text": name, "image": pil}`` dicts.
- hand: one processor call on the literal E5-V prompt strings (left padding), one ``AutoModel``
  forward under ``torch.inference_mode()``, last-token hidden state, L2 normalise.

After a warm-up, the paths are interleaved (A B A B ...) and the median time per repeat is reported,
plus the preprocessing share of each (``model.preprocess(batch)`` / processor call alone vs. full),
and the max abs difference of the embeddings.

Usage::

    .venv/bin/python benchmarks/encode_overhead.py                       # 7M model, CPU, 1 thread, fp32
    .venv/bin/python benchmarks/encode_overhead.py --profile             # + cProfile of mm_st encode
    .venv/bin/python benchmarks/encode_overhead.py --device cuda --dtype bfloat16 --shape 2b   # GPU only
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import platform
import pstats
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Text sizes; vision sizes: depth, embed_dim, heads (mlp_ratio 4). mrope_section sums to head_dim / 2.
SHAPES = {
    "7m": dict(
        text=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=5, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64),
        mrope_section=[8, 12, 12],
        vision=dict(depth=6, embed_dim=128, num_heads=4, mlp_ratio=4),
    ),
    "2b": dict(  # Qwen2-VL-2B shapes (vocabulary stays the tiny one)
        text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, head_dim=128),
        mrope_section=[16, 24, 24],
        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4),
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats per path (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls per path (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs in the batch (default 32)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--shape", choices=tuple(SHAPES), default="7m", help="7m (default) or 2b (GPU only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile mm_st encode (also done automatically when the ratio is below target)")
    parser.add_argument("--target", type=float, default=0.95, help="target mm_st/hand throughput ratio")
    return parser.parse_args()


def build_checkpoint(shape: str, seed: int, directory: Path, device: str, dtype: torch.dtype) -> int:
    """Resize the tiny qwen2_vl checkpoint's config to ``shape``, init with ``seed``, save to ``directory``.

    The tokenizer, processor and special-token ids are the tiny model's (copied as files).
    Returns the parameter count.
    """
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    from mm_st.testing import tiny_model

    tiny = Path(tiny_model("qwen2_vl"))
    spec = SHAPES[shape]
    config = AutoConfig.from_pretrained(tiny)
    text = config.text_config
    for key, value in spec["text"].items():
        setattr(text, key, value)
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    text.rope_parameters = {**text.rope_parameters, "mrope_section": list(spec["mrope_section"])}
    assert 2 * sum(text.rope_parameters["mrope_section"]) == text.head_dim
    vision = config.vision_config
    for key, value in spec["vision"].items():
        setattr(vision, key, value)
    vision.hidden_size = text.hidden_size  # merger output = LM hidden size

    # Build directly on the target device (a 2B fp32 init on CPU is slow); fixed seed.
    torch.manual_seed(seed)
    with torch.device(device if device.startswith("cuda") else "cpu"):
        model = Qwen2VLForConditionalGeneration(config).to(dtype).eval()
    num_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory)
    del model
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, directory / name)
    return num_params


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_preprocess_breakdown(st_model, inputs, hand_preprocess, repeats: int) -> None:
    """Median CPU time of the pieces of mm_st's preprocessing that the hand loop does not have."""
    from sentence_transformers import SentenceTransformer

    from mm_st.inputs import normalize_inputs

    transformer = st_model[0]
    items = normalize_inputs(inputs)
    modality, processor_inputs, _ = transformer.input_formatter.parse_inputs(items)
    messages = transformer.input_formatter.batch_to_message(modality, dict(processor_inputs))[1]["message"]
    pieces = {
        "hand: processor(text=prompts, images=...)": hand_preprocess,
        "mm_st: model.preprocess(batch)": lambda: st_model.preprocess(inputs, content_keys=False),  # as in encode
        "  ST SentenceTransformer.preprocess (no mm_st subclass)": lambda: SentenceTransformer.preprocess(st_model, inputs),
        "  mm_st normalize_inputs": lambda: normalize_inputs(inputs),
        "  ST parse_inputs + batch_to_message": lambda: transformer.input_formatter.batch_to_message(
            *transformer.input_formatter.parse_inputs(items)[:2]),
        "  chat template render only (apply_chat_template tokenize=False)": lambda: transformer.processor.apply_chat_template(
            messages, tokenize=False),
        "ST encode length sort (_input_length x batch)": lambda: np.argsort([-st_model._input_length(x) for x in inputs]),
    }
    for fn in pieces.values():
        fn()
    times = {name: [] for name in pieces}
    for _ in range(repeats):
        for name, fn in pieces.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(f"\n## preprocessing breakdown (median of {repeats}, ms per batch of {len(inputs)})")
    for name, values in times.items():
        print(f"- {name}: {statistics.median(values) * 1e3:.2f} ms")


def main() -> None:
    args = parse_args()
    if args.shape == "2b" and not args.device.startswith("cuda"):
        sys.exit("--shape 2b is for GPU runs only (use --device cuda)")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = args.device

    from transformers import AutoModel, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    from mm_st import build_model, templates
    from mm_st.data import load_emoji

    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mm_st_bench_"))
    try:
        num_params = build_checkpoint(args.shape, args.seed, workdir, device, dtype)
        print(f"model: Qwen2-VL-shaped ({args.shape}), {num_params:,} parameters ({num_params / 1e6:.2f}M), "
              f"built in {time.perf_counter() - t0:.1f}s")

        # ---- inputs: batch of emoji images + English names ----
        data = load_emoji("test")
        rows = data.select(range(args.batch_size))
        images = [row["image"] for row in rows]
        names = [row["name_en"] for row in rows]
        inputs = [{"text": name, "image": image} for name, image in zip(names, images)]

        # ---- path A: mm_st ----
        st_model = build_model(str(workdir), recipe="e5v", dtype=dtype, device=device)
        st_model.eval()

        # ---- path B: hand-written transformers loop ----
        processor = AutoProcessor.from_pretrained(workdir)
        processor.tokenizer.padding_side = "left"
        hf_model = AutoModel.from_pretrained(workdir, dtype=dtype).to(device).eval()
        # Literal E5-V prompt: split around the text once, so the loop only concatenates strings.
        marker = "\x00SENT\x00"
        head, tail = templates.render_prompt("e5v", "qwen2_vl", text=marker, num_images=1).split(marker)
        for name in names:  # the split template is exactly the recipe's prompt
            assert head + name + tail == templates.render_prompt("e5v", "qwen2_vl", text=name, num_images=1)

        def hand_preprocess():
            prompts = [head + name + tail for name in names]
            return processor(text=prompts, images=images, padding=True, return_tensors="pt")

        def hand_encode():
            features = hand_preprocess().to(device)
            with torch.inference_mode():
                hidden = hf_model(**features, use_cache=False).last_hidden_state[:, -1]
                embeddings = torch.nn.functional.normalize(hidden.float(), p=2, dim=-1)
            return embeddings.cpu().numpy()

        def st_encode():
            return st_model.encode(inputs, batch_size=args.batch_size, convert_to_numpy=True)

        def st_preprocess():
            return st_model.preprocess(inputs, content_keys=False)  # as in encode (inference mode: no content keys)

        # Same token ids for both paths (chat template == literal prompt)?
        st_ids = st_preprocess()["input_ids"]
        hand_ids = hand_preprocess()["input_ids"]
        same_ids = st_ids.shape == hand_ids.shape and bool(torch.equal(st_ids, hand_ids))
        seq_len = hand_ids.shape[1]

        # ---- warm-up, then interleaved timing ----
        for _ in range(args.warmup):
            st_encode(), hand_encode(), st_preprocess(), hand_preprocess()
        times: dict[str, list[float]] = {"st": [], "hand": [], "st_pre": [], "hand_pre": []}
        st_emb = hand_emb = None
        for repeat in range(args.repeats):
            order = (("st", st_encode), ("hand", hand_encode))
            for key, fn in order if repeat % 2 == 0 else order[::-1]:  # A B, B A, ...: no position bias
                elapsed, out = timed(fn, device)
                times[key].append(elapsed)
                if key == "st":
                    st_emb = out
                else:
                    hand_emb = out
            for key, fn in (("st_pre", st_preprocess), ("hand_pre", hand_preprocess)):
                times[key].append(timed(fn, device)[0])
        med = {key: statistics.median(values) for key, values in times.items()}

        max_diff = float(np.abs(np.asarray(st_emb, dtype=np.float32) - hand_emb).max())
        print(f"embeddings: shape {st_emb.shape}, max abs diff mm_st vs hand = {max_diff:.3e}; "
              f"identical input_ids: {same_ids} (seq len {seq_len})")
        tolerance = 1e-4 if dtype == torch.float32 else 2e-2
        assert max_diff <= tolerance, f"embeddings differ by {max_diff} > {tolerance}"

        n = args.batch_size
        st_ips, hand_ips = n / med["st"], n / med["hand"]
        ratio = st_ips / hand_ips
        # Paired: each repeat's hand/mm_st time ratio (adjacent calls), less sensitive to machine drift.
        paired = statistics.median(h / s for h, s in zip(times["hand"], times["st"]))
        # From the repository root in the project's environment (source scripts/env.sh); no machine's paths.
        script = Path(__file__).resolve().relative_to(Path(__file__).resolve().parents[1]).as_posix()
        command = " ".join(["python", script, *(shlex.quote(a) for a in sys.argv[1:])])
        import sentence_transformers
        import transformers

        print()
        print("| path | median s / batch | images/s | preprocess s (median) | preprocess share |")
        print("|---|---:|---:|---:|---:|")
        print(f"| mm_st `encode` | {med['st']:.4f} | {st_ips:.1f} | {med['st_pre']:.4f} "
              f"| {med['st_pre'] / med['st']:.0%} |")
        print(f"| hand-written loop | {med['hand']:.4f} | {hand_ips:.1f} | {med['hand_pre']:.4f} "
              f"| {med['hand_pre'] / med['hand']:.0%} |")
        print(f"| **ratio mm_st / hand** | | **{ratio:.3f}** (paired per-repeat median {paired:.3f}) | | |")
        print()
        print(f"- model: Qwen2-VL-shaped random ({args.shape}), {num_params / 1e6:.2f}M params, {args.dtype}, "
              f"device {device}; batch {n} image+text inputs (emoji 64x64 + English name), seq len {seq_len}")
        print(f"- repeats {args.repeats} (interleaved, median), warm-up {args.warmup}; "
              f"max abs diff {max_diff:.2e}; target ratio >= {args.target}: {'met' if ratio >= args.target else 'NOT met'}")
        gpu = f", GPU {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""
        print(f"- machine: CPU {cpu_model()} ({torch.get_num_threads()} torch threads){gpu}; torch {torch.__version__}, "
              f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}, "
              f"Python {platform.python_version()}")
        print(f"- model side (encode - preprocess): mm_st {med['st'] - med['st_pre']:.4f} s, "
              f"hand {med['hand'] - med['hand_pre']:.4f} s; preprocess overhead mm_st - hand "
              f"{(med['st_pre'] - med['hand_pre']) * 1e3:.2f} ms/batch ({(med['st_pre'] - med['hand_pre']) / med['hand']:.1%} of hand time)")
        print(f"- raw times (s): " + json.dumps({k: [round(t, 4) for t in v] for k, v in times.items()}))
        print(f"- command: `{command}`")

        if args.profile or ratio < args.target:
            print_preprocess_breakdown(st_model, inputs, hand_preprocess, max(args.repeats, 20))
            print(f"\n## cProfile of mm_st encode ({args.repeats} calls), top by cumulative time")
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.repeats):
                st_encode()
            profiler.disable()
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(40)
            print(stream.getvalue())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
