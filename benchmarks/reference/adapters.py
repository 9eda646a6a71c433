"""Adapter placement: the modules mm_st's ``build_model(adapter=...)`` adapts vs the reference's ``get_peft_model``.

The reference builds its adapter in ``MMEBModel.build`` as ``get_peft_model(base_model, LoraConfig(r, lora_alpha,
target_modules=lora_target_modules.split(','), lora_dropout, init_lora_weights="gaussian", use_dora=True))`` on
the ``...ForConditionalGeneration`` model. Here ``lora_target_modules``, ``lora_alpha`` and ``lora_dropout`` are
the defaults of the checkout's own ``src/arguments.py`` ``ModelArguments`` (read by importing it), ``r`` is
``--r`` (default 8, mmE5's ``scripts/train/train.sh``). mm_st gets the same arguments as a dict:
``build_model(tiny, recipe=R, adapter={...})`` (sentence-transformers' ``add_adapter`` on the backbone).

Compared per backbone family: the set of adapted module names (``base_model.model.`` and the
ForConditionalGeneration's ``model.`` prefix removed), trainable parameter counts, DoRA magnitude vectors. Also
recorded: whether the checkout's default target list equals the mm_st recipe config's ``lora_target_modules``.

Usage::

    python benchmarks/reference/adapters.py vlm2vec --upstream path/to/VLM2Vec
    python benchmarks/reference/adapters.py mme5 --upstream path/to/mmE5
"""

from __future__ import annotations

import common

SETTINGS = {
    "vlm2vec": {"families": ("llava_next", "qwen2_vl"), "config": "VLM2VecConfig"},
    "mme5": {"families": ("llava_next", "mllama"), "config": "MME5Config"},
}


def parse_args():
    parser = common.base_parser(__doc__)
    parser.add_argument("reference", choices=tuple(SETTINGS))
    parser.add_argument("--r", type=int, default=8, help="LoRA rank (default 8, as mmE5's train.sh)")
    return parser.parse_args()


def adapted(model) -> dict:
    """Adapted module names (prefixes removed), trainable parameters, DoRA magnitude vectors."""
    names = set()
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and len(getattr(module, "lora_A")):
            for prefix in ("base_model.model.", "model."):
                name = name.removeprefix(prefix)
            names.add(name)
    magnitudes = sum(1 for name, _ in model.named_parameters() if "lora_magnitude_vector" in name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    return {"modules": names, "trainable_parameters": trainable, "lora_parameters": lora, "dora_magnitudes": magnitudes}


def main() -> None:
    args = parse_args()
    common.setup(args)
    setting = SETTINGS[args.reference]
    common.import_upstream(args.upstream, args.reference)
    from src.arguments import ModelArguments

    common.quiet_logging()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    import mm_st.training as training
    from mm_st import build_model
    from mm_st.testing import tiny_model

    defaults = ModelArguments(model_name="unused")
    options = {"r": args.r, "lora_alpha": defaults.lora_alpha, "lora_dropout": defaults.lora_dropout,
               "target_modules": defaults.lora_target_modules.split(","), "init_lora_weights": "gaussian",
               "use_dora": True}  # fmt: skip
    recipe_targets = getattr(training, setting["config"])().lora_target_modules
    result = {"reference": args.reference, "commit": common.upstream_commit(args.upstream), "lora": options,
              "reference_default_targets": defaults.lora_target_modules,
              "mm_st_recipe_default_targets": recipe_targets,
              "same_default_targets": set(recipe_targets.split(",")) == set(options["target_modules"]),
              "machine": common.machine(args), "families": {}}  # fmt: skip
    for family in setting["families"]:
        checkpoint = tiny_model(family)
        reference = adapted(get_peft_model(AutoModelForImageTextToText.from_pretrained(checkpoint),
                                           LoraConfig(inference_mode=False, **options)))  # fmt: skip
        mine = adapted(build_model(checkpoint, recipe=args.reference, adapter=dict(options))[0].model)  # the backbone
        entry = {
            "adapted_modules_mm_st": len(mine["modules"]), "adapted_modules_reference": len(reference["modules"]),
            "same_modules": mine["modules"] == reference["modules"],
            "only_mm_st": sorted(mine["modules"] - reference["modules"]),
            "only_reference": sorted(reference["modules"] - mine["modules"]),
            "module_suffixes": sorted({n.rsplit(".", 1)[-1] for n in mine["modules"] | reference["modules"]}),
            **{f"{key}_{side}": value[key] for side, value in (("mm_st", mine), ("reference", reference))
               for key in ("trainable_parameters", "lora_parameters", "dora_magnitudes")},
        }  # fmt: skip
        result["families"][family] = entry
        print(f"{args.reference} / {family}: adapted modules mm_st {entry['adapted_modules_mm_st']}, reference "
              f"{entry['adapted_modules_reference']}, same set {entry['same_modules']}; trainable parameters mm_st "
              f"{entry['trainable_parameters_mm_st']:,} reference {entry['trainable_parameters_reference']:,}; DoRA "
              f"magnitudes {entry['dora_magnitudes_mm_st']} / {entry['dora_magnitudes_reference']}; suffixes "
              f"{', '.join(entry['module_suffixes'])}")
    print(f"default target list: reference {defaults.lora_target_modules!r}, mm_st {setting['config']} "
          f"{recipe_targets!r} (same: {result['same_default_targets']})")
    common.write_result(args, f"adapters_{args.reference}", result)


if __name__ == "__main__":
    main()
