"""mm_st's ``mme5`` training path against mmE5's own dataset, collator, pooling and loss code (tiny Mllama).

Both sides embed the same rows with the same weights: mmE5's ``MMEBModel`` is handed mm_st's backbone module.

- mm_st: ``build_model(tiny_model("mllama"), recipe="mme5", prompt_format="train")``, columns from
  ``load_mme5_synthetic(num_negatives=3)``, features from ``model.preprocess`` per column, embeddings from
  sentence-transformers' ``embed_columns``, loss ``MultimodalInfoNCELoss(temperature=0.02,
  hard_negative_scope="own", mask_duplicates=False)``.
- mmE5 (run as written): ``TrainDataset`` (``src/dataset.py``; its ``__init__`` reads the rows from
  ``--synthetic_dataset_path``-style ``save_to_disk`` folders, so nothing is downloaded) and its
  ``__getitem__`` / ``filter_hard_negtives``, ``LlamaCollator(max_len=256)`` (``src/collator.py``),
  ``MMEBModel(encoder, pooling="last", normalize=True).encode_input`` and ``forward(qry, tgt, neg)``
  (``src/model.py``, each negative scored against its own query). The reference's flattened negatives
  (query-major) are compared column by column (``view(B, 3, d)``).
- Replaced: the vendored backbone classes (transformers' own ``MllamaModel`` and processor, from the tiny
  checkpoint). Floating inputs are cast to the model's dtype.

Also measured (the mixed batch): each column's text-only rows embedded by the reference inside the mixed batch
and in a batch of text-only rows (the ``LlamaCollator`` gives a text row in an image batch dummy pixels and an
all-zero cross-attention mask), and the tiny model's ``tanh(cross_attn_attn_gate)``.

Diagnosis switch: ``--mmst-pad right`` pads mm_st on the right like the reference.

Usage::

    python benchmarks/reference/mme5.py --upstream path/to/mmE5 --dtype float64
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import common

CONFIGS = ("Classification", "Retrieval")  # TrainDataset rows 0-7 and 8-15
NEGATIVES = 3
BATCHES = {
    "img+txt query -> txt target, 3 txt negatives": list(range(8)),
    "txt query -> img+txt target, 1-3 img+txt negatives padded to 3": list(range(8, 16)),
    "mixed modalities": [0, 8, 1, 9, 2, 10, 3, 11],
}
COLUMNS = ("anchor", "positive") + tuple(f"negative_{k + 1}" for k in range(NEGATIVES))


def parse_args():
    parser = common.base_parser(__doc__)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--mmst-pad", choices=("left", "right"), default="left",
                        help="mm_st's padding side (default left, as build_model sets; right = like the reference)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    common.setup(args)
    finder = common.import_upstream(args.upstream, "mme5")
    import datasets
    import torch
    from src.arguments import DataArguments, ModelArguments
    from src.collator import LlamaCollator
    from src.dataset import TrainDataset
    from src.model import MMEBModel

    common.quiet_logging()
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from transformers import AutoProcessor

    from mm_st import build_model
    from mm_st.data import load_mme5_synthetic
    from mm_st.losses import MultimodalInfoNCELoss
    from mm_st.testing import tiny_model

    dtype = getattr(torch, args.dtype)
    scratch = Path(tempfile.mkdtemp(prefix="mm_st-reference-data-"))
    data = common.write_data(scratch)
    for config in CONFIGS:  # mmE5 reads local data with load_from_disk (--synthetic_dataset_path)
        rows = common.read_rows(data["synth"] / config / "train-00000-of-00001.jsonl")
        datasets.Dataset.from_list(rows).save_to_disk(str(scratch / "synth_disk" / config))
    checkpoint = tiny_model("mllama")

    model = build_model(checkpoint, recipe="mme5", prompt_format="train", dtype=dtype).eval()
    tokenizer = model[0].processor.tokenizer
    tokenizer.padding_side = args.mmst_pad
    synthetic = load_mme5_synthetic(data["synth"], configs=CONFIGS, image_root=data["images"], num_negatives=NEGATIVES)
    mm_st_rows = datasets.concatenate_datasets([synthetic[c] for c in CONFIGS])
    loss_fn = MultimodalInfoNCELoss(model, temperature=0.02, hard_negative_scope="own", mask_duplicates=False)

    data_args = DataArguments(synthetic_dataset_path=str(scratch / "synth_disk"), synthetic_subset_name=list(CONFIGS),
                              image_dir=str(data["images"]), max_len=256, negative_ratio=NEGATIVES)  # fmt: skip
    model_args = ModelArguments(model_name=checkpoint, model_backbone="mllama")
    train_dataset = TrainDataset(data_args, model_args)
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.tokenizer.padding_side = "right"  # as mmE5's train.py sets
    collator = LlamaCollator(data_args, processor)
    reference = MMEBModel(encoder=model[0].model, pooling="last", normalize=True, temperature=0.02)

    def encode(inputs: dict):
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        return reference.encode_input(cast)

    def reference_side(items: list[int]):
        """Per column: reps (negatives split into columns) and unpadded ids."""
        qry, pos, neg = collator([train_dataset[i] for i in items])
        batch = len(items)
        reps = [encode(qry), encode(pos)]
        ids = [common.reference_row_ids(c["input_ids"], c["attention_mask"]) for c in (qry, pos)]
        flat = encode(neg)
        flat_ids = common.reference_row_ids(neg["input_ids"], neg["attention_mask"])
        for k in range(NEGATIVES):
            reps.append(flat.view(batch, NEGATIVES, -1)[:, k])
            ids.append(flat_ids[k::NEGATIVES])
        return reps, ids, flat

    def reference_loss(reps, flat) -> float:
        # MMEBModel.forward as written, on the reps encode_input gave (not encoding a second time).
        reference.encode_input = lambda given: given["reps"]
        try:
            return float(reference.forward(qry={"reps": reps[0]}, tgt={"reps": reps[1]}, neg={"reps": flat}))
        finally:
            del reference.encode_input

    def is_text(item) -> bool:
        return item["image"] is None

    results = []
    with torch.no_grad():
        for name, items in BATCHES.items():
            columns = [[mm_st_rows[i][column] for i in items] for column in COLUMNS]
            features = [model.preprocess(column) for column in columns]
            embeddings = embed_columns(model, features)
            loss = float(loss_fn.compute_multimodal_loss(embeddings))
            ref_reps, ref_ids, flat = reference_side(items)
            ref_loss = reference_loss(ref_reps, flat)
            entry = {"batch": name, "rows": len(items), "loss_mm_st": loss, "loss_reference": ref_loss,
                     "abs_loss_diff": abs(loss - ref_loss)}  # fmt: skip
            ids_equal = 0
            grouped = list(ref_reps)  # the reference's reps with each column's text rows from a text-only batch
            for k in range(len(COLUMNS)):
                compared = common.compare_ids(common.mm_st_row_ids(features[k]), ref_ids[k], tokenizer)
                ids_equal += compared["ids_equal"]
                entry.update({f"col{k}_{key}": value for key, value in compared.items()})
                diff = (embeddings[k].double() - ref_reps[k].double()).abs().amax(dim=1)
                entry[f"col{k}_max_abs_diff"] = float(diff.max())
                entry[f"col{k}_row_max_abs_diff"] = [float(d) for d in diff]
                text_rows = [r for r, item in enumerate(columns[k]) if is_text(item)]
                if text_rows and len(text_rows) < len(items):  # this column mixes text rows and image rows
                    image_rows = [r for r in range(len(items)) if r not in text_rows]
                    alone, _, _ = reference_side([items[r] for r in text_rows])
                    grouped[k] = grouped[k].clone()
                    grouped[k][text_rows] = alone[k]
                    entry[f"col{k}_mixed"] = {
                        "text_rows": text_rows,
                        "reference_text_rows_mixed_vs_text_only_batch":
                            common.max_abs_diff(ref_reps[k][text_rows], alone[k]),
                        "mm_st_vs_reference_text_rows": float(diff[text_rows].max()),
                        "mm_st_vs_reference_text_only_batch_text_rows":
                            common.max_abs_diff(embeddings[k][text_rows], alone[k]),
                        "mm_st_vs_reference_image_rows": float(diff[image_rows].max()),
                    }  # fmt: skip
            if any(f"col{k}_mixed" in entry for k in range(len(COLUMNS))):
                flat_grouped = torch.stack(grouped[2:], dim=1).reshape(len(items) * NEGATIVES, -1)
                entry["loss_reference_text_rows_from_text_only_batches"] = reference_loss(grouped, flat_grouped)
            results.append(entry)
            print(f"{name} ({len(items)} rows): ids {ids_equal}/{len(COLUMNS) * len(items)}, max |emb diff| "
                  f"{max(entry[f'col{k}_max_abs_diff'] for k in range(len(COLUMNS))):.1e}, loss mm_st {loss:.10f} "
                  f"reference {ref_loss:.10f} |diff| {entry['abs_loss_diff']:.1e}")
            if "loss_reference_text_rows_from_text_only_batches" in entry:
                print(f"  the reference's loss with each column's text rows from a text-only batch: "
                      f"{entry['loss_reference_text_rows_from_text_only_batches']:.10f}")
            for k in range(len(COLUMNS)):
                if f"col{k}_mixed" in entry:
                    m = entry[f"col{k}_mixed"]
                    print(f"  {COLUMNS[k]}: reference text rows, mixed vs text-only batch "
                          f"{m['reference_text_rows_mixed_vs_text_only_batch']:.2e}; mm_st vs reference: image rows "
                          f"{m['mm_st_vs_reference_image_rows']:.1e}, text rows vs the reference's text-only batch "
                          f"{m['mm_st_vs_reference_text_only_batch_text_rows']:.1e}")

    gates = {name: float(torch.tanh(p.detach().double()).flatten()[0])
             for name, p in model[0].model.named_parameters() if name.endswith("cross_attn_attn_gate")}
    example = mm_st_rows[0]["anchor"]
    rendered = common.shorten(tokenizer.decode(common.mm_st_row_ids(model.preprocess([example]))[0]))
    variant = "_mmst-pad-right" if args.mmst_pad == "right" else ""
    common.write_result(args, f"mme5_mllama_{args.dtype}{variant}", {
        "reference": "haon-chen/mmE5", "commit": common.upstream_commit(args.upstream), "family": "mllama",
        "dtype": args.dtype, "mmst_pad": args.mmst_pad, "stubbed_modules_imported": sorted(finder.stubbed),
        "machine": common.machine(args), "tanh_cross_attn_attn_gate": gates, "example_mm_st_text": rendered,
        "batches": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
