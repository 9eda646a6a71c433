"""Laptop demo: train a tiny multimodal embedding model on real emoji images and their names.

Builds a tiny random multimodal LLM (``mm_st.testing.tiny_model``), turns it into an E5-V-style
embedding model with ``mm_st.build_model``, trains it with the sentence-transformers trainer and
InfoNCE (MultipleNegativesRankingLoss, temperature 0.05) on the bundled emoji train split
(image <-> name, several languages), and prints held-out Recall@1 and @10 on the test split's unseen emoji
before and after training, next to chance. Offline, CPU, about 3 minutes.

    python recipes/demo.py                      # defaults
    python recipes/demo.py --family llava_next --epochs 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def recall(model, images, texts, ks=(1, 10), batch_size: int = 64) -> dict[str, float]:
    """Image->text and text->image Recall@k where item i of ``images`` matches item i of ``texts``."""
    img = model.encode(images, batch_size=batch_size, convert_to_tensor=True)
    txt = model.encode(texts, batch_size=batch_size, convert_to_tensor=True)
    scores = img @ txt.T
    target = torch.arange(len(texts)).unsqueeze(1)
    result = {}
    for direction, matrix in (("image->text", scores), ("text->image", scores.T)):
        for k in ks:
            hits = (matrix.topk(k, dim=1).indices == target).any(dim=1)
            result[f"{direction} R@{k}"] = hits.float().mean().item()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="qwen2_vl", help="tiny backbone family (see mm_st.testing.TINY_FAMILIES)")
    parser.add_argument("--recipe", default="e5v")
    parser.add_argument("--languages", default="en,de,fr,es", help="name languages used for training")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--output-dir", default=None, help="where to save the trained model (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from mm_st import build_model
    from mm_st.data import load_emoji
    from mm_st.testing import tiny_model

    start = time.perf_counter()
    emoji = load_emoji()
    train, test = emoji["train"], emoji["test"]
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    pairs = {"image": [], "text": []}
    for lang in languages:
        keep = [i for i, name in enumerate(train[f"name_{lang}"]) if name]
        pairs["image"].extend(train.select(keep)["image"])
        pairs["text"].extend(train.select(keep)[f"name_{lang}"])
    train_pairs = Dataset.from_dict(pairs).cast_column("image", train.features["image"]).shuffle(seed=args.seed)

    model = build_model(tiny_model(args.family, seed=args.seed), recipe=args.recipe)
    test_images, test_names = test["image"], test["name_en"]
    print(f"mm_st demo: tiny {args.family} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
          f"recipe {args.recipe}; train {len(train)} emoji x {len(languages)} languages = {len(train_pairs)} pairs; "
          f"test {len(test)} unseen emoji; torch threads {args.threads}")
    before = recall(model, test_images, test_names)

    output_dir = args.output_dir or tempfile.mkdtemp(prefix="mm_st_demo_")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        logging_steps=20,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_drop_last=True,
        use_cpu=not torch.cuda.is_available(),
    )
    loss = MultipleNegativesRankingLoss(model, scale=1 / 0.05)
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train_pairs, loss=loss)
    train_start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_start
    after = recall(model, test_images, test_names)
    model.save(os.path.join(output_dir, "final"))

    print(f"\nHeld-out retrieval on {len(test)} unseen emoji (image <-> English name)")
    print(f"{'metric':<18}{'before':>10}{'after':>10}{'chance':>10}")
    for metric in before:
        chance = int(metric.rsplit("@", 1)[1]) / len(test)
        print(f"{metric:<18}{before[metric]:>10.4f}{after[metric]:>10.4f}{chance:>10.4f}")
    print(f"\ntraining {train_seconds:.0f} s, total {time.perf_counter() - start:.0f} s; "
          f"model saved to {os.path.join(output_dir, 'final')}")


if __name__ == "__main__":
    main()
