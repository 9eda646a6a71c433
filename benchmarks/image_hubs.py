"""Why the SmolLM2 FastVLM's image tasks stay at chance: its untrained image embeddings are hubs.

For each language model of ``mm_st.real_vision.fast_vlm_path`` (the ImageNet-pretrained EfficientNet-Lite0 tower +
a new random projector + the LM) and seed, untrained, with MM-Embed's prompts: the first ``--images`` held-out emoji,
altered as MM-Embed's embedded image->image task alters them (``mbeir_altered_image``: scaled, shifted, coloured
background), are the queries (with the task's instruction, and without), the plain images the candidates. Printed per
row: Recall@1 among the ``--images`` candidates, how many distinct candidates are anyone's top 1 (a hub: few), and
the mean cosine between two different candidates (how much of an embedding is the shared prompt).

Usage::

    python benchmarks/image_hubs.py                        # tiny and smollm2, seeds 1 2 3, 40 images
    python benchmarks/image_hubs.py --lms smollm2 --seeds 1 --images 100
"""

from __future__ import annotations

import argparse
import random
import time

import torch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lms", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from mm_st import build_model
    from mm_st.data import load_emoji
    from mm_st.data.emoji import EMOJI_MBEIR_TASKS
    from mm_st.real_vision import fast_vlm_path
    from mm_st.training.embedded import mbeir_altered_image

    test = load_emoji("test").select(range(args.images))
    candidates = [row["image"].convert("RGB") for row in test]
    altered = [mbeir_altered_image(image, random.Random(i)) for i, image in enumerate(candidates)]
    truth = torch.arange(len(candidates))
    instruction = EMOJI_MBEIR_TASKS["Emoji_i2i"].instruction  # the embedded image->image task's
    start = time.perf_counter()
    print(f"| LM | seed | query | R@1 of {args.images} | distinct top-1 candidates | mean cosine between candidates |")
    print("|---|---|---|---:|---:|---:|")
    for lm in args.lms:
        for seed in args.seeds:
            model = build_model(fast_vlm_path(lm, seed=seed), recipe="mmembed")
            docs = model.encode_document(candidates, convert_to_tensor=True, normalize_embeddings=True)
            pairwise = docs @ docs.T
            off_diagonal = pairwise[~torch.eye(len(docs), dtype=torch.bool)].mean().item()
            for label, queries in (("image + instruction", [{"image": q, "instruction": instruction} for q in altered]),
                                   ("image", altered)):
                top = (model.encode_query(queries, convert_to_tensor=True, normalize_embeddings=True) @ docs.T).argmax(1)
                print(f"| {lm} | {seed} | {label} | {(top == truth).float().mean().item():.3f} | "
                      f"{len(set(top.tolist()))} | {off_diagonal:.3f} |", flush=True)
    print(f"\nchance R@1 {1 / args.images:.3f}; {args.threads} thread(s); wall {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
