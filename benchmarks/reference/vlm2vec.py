"""mm_st's ``vlm2vec`` training path against VLM2Vec's own data, collator, pooling and loss code (tiny checkpoint).

Both sides embed the same rows with the same weights: VLM2Vec's ``MMEBModel`` is handed mm_st's backbone module.

- mm_st: ``build_model(tiny_model(F), recipe="vlm2vec", prompt_format="train")``, columns from
  ``load_mmeb_train``, features from ``model.preprocess`` per column (as the trainer's collator), embeddings
  from sentence-transformers' ``embed_columns``, loss ``MultimodalInfoNCELoss(temperature=0.02,
  hard_negative_scope="shared", mask_duplicates=False)``.
- VLM2Vec (run as written): ``data_prepare_v4`` (``src/data/dataset/mmeb_dataset.py``) ->
  ``MultimodalDataCollator`` + ``process_vlm_inputs_fns`` (``src/data/collator/train_collator.py``,
  ``src/model/processor.py``) -> ``MMEBModel(encoder, pooling="last", normalize=True).encode_input`` and its
  cross-entropy (``MMEBModel.forward``, given the reps it computed).
- Replaced: the vendored backbone and processor classes (transformers' own, from the tiny checkpoint). Between
  the collator and transformers' class, the batch is adapted as the vendored backbone reads it: keys it ignores
  (texts, dataset names) are dropped; LLaVA-NeXT's dummy ``pixel_values`` of a text-only batch are dropped (the
  vendored model skips all-zero pixels); Qwen2-VL's per-row pixel lists are concatenated (as the vendored model
  does) and ``mm_token_type_ids=0`` passed (VLM2Vec's text has no ``<|vision_start|>``, so its ``get_rope_index``
  gives image tokens ordinary 1-D positions).

Diagnosis switches: ``--mmst-pad right`` pads mm_st on the right like the reference; ``--ref-mm-types image``
gives the reference mm_st's image-token types (3-D M-RoPE positions, Qwen2-VL).

Usage::

    python benchmarks/reference/vlm2vec.py --upstream path/to/VLM2Vec --family llava_next --dtype float64
"""

from __future__ import annotations

import tempfile
import types
from pathlib import Path

import common

# (config, row) per batch, rows of the files common.write_data writes.
BATCHES = {
    "img+txt query -> txt target": [("ImageNet_1K", i) for i in range(8)] + [("OK-VQA", i) for i in range(8)],
    "txt query -> img+txt target": [("MSCOCO_t2i", i) for i in range(8)],
    "mixed modalities": [("ImageNet_1K", 0), ("MSCOCO_t2i", 0), ("OK-VQA", 0), ("MSCOCO_t2i", 1),
                         ("ImageNet_1K", 1), ("MSCOCO_t2i", 2), ("OK-VQA", 1), ("MSCOCO_t2i", 3)],
}  # fmt: skip
COLUMNS = ("anchor", "positive")


def parse_args():
    parser = common.base_parser(__doc__)
    parser.add_argument("--family", choices=("llava_next", "qwen2_vl"), required=True)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--mmst-pad", choices=("left", "right"), default="left",
                        help="mm_st's padding side (default left, as build_model sets; right = like the reference)")
    parser.add_argument("--ref-mm-types", choices=("zero", "image"), default="zero",
                        help="Qwen2-VL: mm_token_type_ids given to the reference (zero = VLM2Vec's 1-D positions)")
    return parser.parse_args()


def backbone_inputs(batch: dict, family: str, mm_types: str, image_token_id: int, dtype) -> dict:
    """The collator's batch as the vendored backbone reads it, for transformers' own class (see module doc)."""
    import torch

    out = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) or k in ("pixel_values", "image_grid_thw")}
    if family == "llava_next":
        pixels = out.get("pixel_values")
        if pixels is not None and (pixels.dim() < 4 or pixels.norm() == 0):  # the collator's text-only dummy
            out.pop("pixel_values"), out.pop("image_sizes", None)
    else:  # qwen2_vl
        pixels = [torch.as_tensor(p) for p in out.pop("pixel_values") or [] if p is not None]
        grids = [torch.as_tensor(g) for g in out.pop("image_grid_thw") or [] if g is not None]
        if pixels:
            out["pixel_values"], out["image_grid_thw"] = torch.cat(pixels), torch.cat(grids)
        ids = out["input_ids"]
        out["mm_token_type_ids"] = (ids == image_token_id).long() if mm_types == "image" else torch.zeros_like(ids)
    for key, value in out.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            out[key] = value.to(dtype)
    return out


def load_processor(checkpoint: str, family: str, data_args):
    """VLM2Vec's ``load_processor`` with transformers' classes: for Qwen2-VL its image processor gets
    ``size={"shortest_edge": resize_min_pixels, "longest_edge": resize_max_pixels}`` (its DataArguments defaults)."""
    from transformers import AutoImageProcessor, AutoProcessor

    if family != "qwen2_vl":
        return AutoProcessor.from_pretrained(checkpoint)
    size = {"shortest_edge": data_args.resize_min_pixels, "longest_edge": data_args.resize_max_pixels}
    image_processor = AutoImageProcessor.from_pretrained(checkpoint, size=size)
    return AutoProcessor.from_pretrained(checkpoint, image_processor=image_processor)


def main() -> None:
    args = parse_args()
    common.setup(args)
    finder = common.import_upstream(args.upstream, "vlm2vec")
    import torch
    from src.arguments import DataArguments, ModelArguments
    from src.data.collator.train_collator import MultimodalDataCollator
    from src.data.dataset.mmeb_dataset import data_prepare_v4
    from src.model.model import MMEBModel

    common.quiet_logging()
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from mm_st import build_model
    from mm_st.data import load_mmeb_train
    from mm_st.losses import MultimodalInfoNCELoss
    from mm_st.testing import tiny_model

    dtype = getattr(torch, args.dtype)
    data = common.write_data(Path(tempfile.mkdtemp(prefix="mm_st-reference-data-")))
    checkpoint = tiny_model(args.family)

    model = build_model(checkpoint, recipe="vlm2vec", prompt_format="train", dtype=dtype).eval()
    tokenizer = model[0].processor.tokenizer
    tokenizer.padding_side = args.mmst_pad
    configs = sorted({c for rows in BATCHES.values() for c, _ in rows})
    mm_st_data = load_mmeb_train(data["mmeb"], configs=configs, image_root=data["images"])
    loss_fn = MultimodalInfoNCELoss(model, temperature=0.02, hard_negative_scope="shared", mask_duplicates=False)

    processor = load_processor(checkpoint, args.family, DataArguments())
    collator = MultimodalDataCollator(
        processor=processor, model_args=ModelArguments(model_name=checkpoint, model_backbone=args.family),
        data_args=DataArguments(), training_args=types.SimpleNamespace(model_backbone=args.family),
    )  # fmt: skip
    reference = MMEBModel(encoder=model[0].model, pooling="last", normalize=True, temperature=0.02)
    image_token_id = model[0].model.config.image_token_id

    def prepared(config: str, index: int) -> dict:
        row = common.read_rows(data["mmeb"] / config / "original-00000-of-00001.jsonl")[index]
        out = data_prepare_v4({k: [v] for k, v in row.items()}, image_dir=str(data["images"]),
                              model_backbone=args.family, image_resolution=None, global_dataset_name=f"mmeb/{config}")
        return {k: v[0] for k, v in out.items()}

    def encode(inputs: dict):
        return reference.encode_input(backbone_inputs(inputs, args.family, args.ref_mm_types, image_token_id, dtype))

    def reference_side(examples: list[dict]):
        """Per column: reps and unpadded ids; the batching VLM2Vec's collator allowed."""
        try:
            batches = [collator(examples)]
            batching = "one batch"
        except ValueError as error:  # LLaVA-NeXT's collator refuses a batch mixing text-only and image rows
            if "inhomogeneous" not in str(error):
                raise
            batches = [collator([example]) for example in examples]
            batching = f"row by row (the collator refused the batch: {error})"
        reps, ids = [], []
        for column in range(2):
            reps.append(torch.cat([encode(batch[column]) for batch in batches]))
            column_ids = []
            for batch in batches:
                column_ids += common.reference_row_ids(batch[column]["input_ids"], batch[column]["attention_mask"])
            ids.append(column_ids)
        return reps, ids, batching

    def reference_loss(reps) -> float:
        # MMEBModel.forward as written, on the reps encode_input gave (not encoding a second time).
        reference.encode_input = lambda given: given["reps"]
        try:
            return float(reference.forward(qry={"reps": reps[0]}, tgt={"reps": reps[1]}))
        finally:
            del reference.encode_input

    results = []
    with torch.no_grad():
        for name, rows in BATCHES.items():
            columns = [[mm_st_data[c][i][column] for c, i in rows] for column in COLUMNS]
            features = [model.preprocess(column) for column in columns]
            embeddings = embed_columns(model, features)
            loss = float(loss_fn.compute_multimodal_loss(embeddings))
            ref_reps, ref_ids, batching = reference_side([prepared(c, i) for c, i in rows])
            ref_loss = reference_loss(ref_reps)
            entry = {"batch": name, "rows": len(rows), "reference_batching": batching,
                     "loss_mm_st": loss, "loss_reference": ref_loss, "abs_loss_diff": abs(loss - ref_loss)}  # fmt: skip
            for k in range(len(COLUMNS)):
                compared = common.compare_ids(common.mm_st_row_ids(features[k]), ref_ids[k], tokenizer)
                entry.update({f"col{k}_{key}": value for key, value in compared.items()})
                entry[f"col{k}_max_abs_diff"] = common.max_abs_diff(embeddings[k], ref_reps[k])
            results.append(entry)
            print(f"{name} ({len(rows)} rows, reference {batching.split(' (')[0]}): ids "
                  f"{entry['col0_ids_equal'] + entry['col1_ids_equal']}/{2 * len(rows)}, max |emb diff| "
                  f"{max(entry['col0_max_abs_diff'], entry['col1_max_abs_diff']):.1e}, loss mm_st {loss:.10f} "
                  f"reference {ref_loss:.10f} |diff| {entry['abs_loss_diff']:.1e}")

    example = mm_st_data["OK-VQA"][0]["anchor"]
    rendered = common.shorten(tokenizer.decode(common.mm_st_row_ids(model.preprocess([example]))[0]))
    variant = ("_mmst-pad-right" if args.mmst_pad == "right" else "") + (
        "_ref-mm-types-image" if args.ref_mm_types == "image" else "")
    common.write_result(args, f"vlm2vec_{args.family}_{args.dtype}{variant}", {
        "reference": "TIGER-AI-Lab/VLM2Vec", "commit": common.upstream_commit(args.upstream),
        "family": args.family, "dtype": args.dtype, "mmst_pad": args.mmst_pad, "ref_mm_types": args.ref_mm_types,
        "reference_processor": f"{type(processor).__name__}, image size {dict(processor.image_processor.size)}",
        "stubbed_modules_imported": sorted(finder.stubbed), "machine": common.machine(args),
        "example_mm_st_text": rendered, "batches": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
