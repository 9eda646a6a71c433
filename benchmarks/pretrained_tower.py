"""Held-out emoji retrieval: a random tiny image tower vs the ImageNet-pretrained EfficientNet-Lite0 (issue 29).

Arms (each a FastVLM built offline; the same tiny random Qwen2-style LM, hidden 64, in all of them):

- ``random``: ``mm_st.testing.tiny_model("fast_vlm")``: a random timm ``test_efficientnet_gn`` tower (128 px,
  16 image tokens), everything trained (what the recipes' embedded defaults do: full weights, lr 1e-3).
- ``lite0-frozen``: ``mm_st.real_vision.fast_vlm_path("tiny")``: the pretrained EfficientNet-Lite0 tower (224 px,
  49 image tokens), kept as it is by ``freeze_vision_tower`` (no gradients, eval-mode BatchNorm); projector + LM train.
- ``lite0-trained``: the same folder, everything trained at lr 1e-3 (the embedded default's full fine-tuning).
- ``lite0-smollm2-frozen`` (opt-in, ``--arms``): the pretrained tower + SmolLM2-135M-Instruct, tower frozen.

Training, equal for every arm: VLM2Vec's prompts (``build_model(path, recipe="vlm2vec")``), ``MultimodalInfoNCELoss``
(temperature 0.02, VLM2Vec's), English emoji name -> its image on the 1458 training emoji, batch 32, ``--steps``
optimizer steps, lr 1e-3, 10% warm-up, linear decay, seed s (sentence-transformers' trainer).

Scores, before and after training, on the 391 held-out test emoji (chance Recall@1 = 1/391 = 0.0026):

- ``t2i``: English name -> image among the 391 images, Recall@1;
- ``i2i``: an altered copy of each image (rotated 20 degrees, cropped to the middle 80%, on white) -> the original
  among the 391 images, Recall@1.

A reference line scores i2i with the pretrained tower alone (global-average-pooled 1280-d ImageNet features, cosine,
no LM, no training). Usage::

    python benchmarks/pretrained_tower.py                       # 3 arms x seeds 1 2 3, 30 steps
    python benchmarks/pretrained_tower.py --seeds 1 --steps 20 --arms lite0-smollm2-frozen
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

CHANCE = 1 / 391


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["random", "lite0-frozen", "lite0-trained"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (default 30)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the raw scores to this JSON file")
    return parser.parse_args()


def altered(image):
    from PIL import Image

    rgb = image.convert("RGB")
    w, h = rgb.size
    crop = rgb.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((w, h), Image.Resampling.BICUBIC)
    return crop.rotate(20, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))


def held_out():
    from mm_st.data import load_emoji

    test = load_emoji("test")
    images = [img.convert("RGB") for img in test["image"]]
    return test["name_en"], images, [altered(img) for img in images]


def recall_at_1(queries: torch.Tensor, documents: torch.Tensor) -> float:
    top = (queries @ documents.T).argmax(dim=1)
    return (top == torch.arange(len(top))).float().mean().item()


def scores(model, data) -> dict[str, float]:
    names, images, altered_images = data
    encode = lambda xs: model.encode(xs, batch_size=32, convert_to_tensor=True, normalize_embeddings=True)  # noqa: E731
    documents = encode(images)
    return {"t2i": recall_at_1(encode(names), documents), "i2i": recall_at_1(encode(altered_images), documents)}


def tower_only_i2i(data) -> float:
    """i2i with the pretrained tower's pooled features alone (the folder's image processor)."""
    from transformers import AutoProcessor

    from mm_st.real_vision import fast_vlm_path, pretrained_tower

    processor = AutoProcessor.from_pretrained(fast_vlm_path("tiny")).image_processor
    tower = pretrained_tower(num_classes=0)

    def embed(images):
        with torch.no_grad():
            out = torch.cat([tower(processor(images=images[i:i + 32], return_tensors="pt")["pixel_values"])
                             for i in range(0, len(images), 32)])
        return torch.nn.functional.normalize(out, dim=-1)

    _, images, altered_images = data
    return recall_at_1(embed(altered_images), embed(images))


def _random_folder() -> tuple[str, bool]:
    from mm_st.testing import tiny_model

    return tiny_model("fast_vlm", head=False), False


def _lite0(lm: str, frozen: bool):
    def folder() -> tuple[str, bool]:
        from mm_st.real_vision import fast_vlm_path

        return fast_vlm_path(lm), frozen

    return folder


ARMS = {"random": _random_folder, "lite0-frozen": _lite0("tiny", True), "lite0-trained": _lite0("tiny", False),
        "lite0-smollm2-frozen": _lite0("smollm2", True)}


def run(arm: str, seed: int, steps: int, data) -> dict:
    from datasets import Dataset, Features, Image, Value
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import set_seed

    from mm_st import build_model
    from mm_st.data import load_emoji
    from mm_st.losses import MultimodalInfoNCELoss
    from mm_st.real_vision import freeze_vision_tower

    path, frozen = ARMS[arm]()
    set_seed(seed)
    model = build_model(path, recipe="vlm2vec")
    if frozen:
        freeze_vision_tower(model)
    before = scores(model, data)
    train = load_emoji("train")
    rows = Dataset.from_dict({"anchor": train["name_en"], "positive": train["image"]},
                             features=Features(anchor=Value("string"), positive=Image()))
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=32, learning_rate=1e-3, warmup_steps=0.1,
            logging_steps=10**6, save_strategy="no", report_to="none", seed=seed, use_cpu=True,
            dataloader_drop_last=True)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=rows,
                                   loss=MultimodalInfoNCELoss(model, temperature=0.02)).train()
    model.eval()
    return {"before": before, "after": scores(model, data), "train_s": time.time() - start}


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    data = held_out()
    results = {}
    for arm in args.arms:
        for seed in args.seeds:
            results.setdefault(arm, []).append(run(arm, seed, args.steps, data))
            print(f"RUN {arm} seed {seed}: {json.dumps(results[arm][-1])}", flush=True)
    print(f"held-out emoji, {len(args.seeds)} seeds ({' '.join(map(str, args.seeds))}), {args.steps} steps, "
          f"batch 32, lr 1e-3; torch threads {args.threads}; {platform.processor() or platform.machine()}")
    print(f"{'arm':<22}{'t2i before':>12}{'t2i after':>16}{'i2i before':>16}{'i2i after':>16}{'train s':>10}")
    for arm, runs in results.items():
        cells = [_mean_sd([r[when][key] for r in runs]) for key in ("t2i", "i2i") for when in ("before", "after")]
        print(f"{arm:<22}{cells[0]:>12}{cells[1]:>16}{cells[2]:>16}{cells[3]:>16}"
              f"{statistics.mean(r['train_s'] for r in runs):>10.0f}")
    reference = tower_only_i2i(data)
    print(f"reference: pretrained tower alone (pooled ImageNet features), i2i Recall@1 {reference:.3f}; "
          f"chance {CHANCE:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "tower_only_i2i": reference},
                                              indent=1))


if __name__ == "__main__":
    main()
