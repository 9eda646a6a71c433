"""What a stage trains with: the model (adapter, QLoRA, vision tower), the loss and the trainer's arguments."""

from __future__ import annotations

import logging
from typing import Any

import torch

from mm_st.training.plan import Plan, qlora_available, torch_dtype

logger = logging.getLogger("mm_st.training.stage")  # the runner's log lines, under the runner's logger


def build_stage_model(plan: Plan) -> Any:
    """The model with the recipe's training text and adapter (QLoRA on CUDA with bitsandbytes); a saved model
    folder (a previous stage's ``model/``) continues with its own adapter."""
    from mm_st import build_model

    c = plan.config
    model_kwargs = {}
    if c.quantization == "4bit" and qlora_available() and not plan.continues:
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    elif c.quantization == "4bit" and not plan.continues:
        logger.warning("4-bit QLoRA needs CUDA and bitsandbytes; training plain LoRA in %s instead.", torch_dtype(c.dtype) or "float32")
    return build_model(plan.model, recipe=c.recipe, prompt_format=c.prompt_format, family=plan.family,
                       max_length=c.max_length, dtype=torch_dtype(c.dtype), adapter=c.adapter_config(),
                       model_kwargs=model_kwargs, vision_tower=c.tower_mode(),
                       **({} if plan.continues else c.model_options()))


def build_loss(plan: Plan, model: Any) -> Any:
    from mm_st.losses import CachedMultimodalInfoNCELoss, MultimodalInfoNCELoss

    c = plan.config
    kwargs = dict(temperature=c.temperature, hard_negative_scope=c.hard_negative_scope,
                  mask_duplicates=c.mask_duplicates, gather_across_devices=c.gather_across_devices and plan.world_size > 1,
                  **c.loss_options())
    if 0 < c.mini_batch_size < plan.per_device_batch:
        return CachedMultimodalInfoNCELoss(model, mini_batch_size=c.mini_batch_size, **kwargs)
    return MultimodalInfoNCELoss(model, **kwargs)


def training_arguments(plan: Plan, evaluate_during: bool) -> Any:
    from sentence_transformers import SentenceTransformerTrainingArguments

    c = plan.config
    cuda = torch.cuda.is_available()
    return SentenceTransformerTrainingArguments(
        output_dir=str(plan.output_dir / "checkpoints"),
        per_device_train_batch_size=plan.per_device_batch,
        gradient_accumulation_steps=1,
        learning_rate=c.learning_rate,
        num_train_epochs=c.num_train_epochs,
        max_steps=c.max_steps,
        warmup_steps=c.warmup if c.warmup < 1 else int(c.warmup),  # < 1: a share of the steps (transformers 5)
        max_grad_norm=c.max_grad_norm,
        lr_scheduler_type=c.lr_scheduler_type,
        weight_decay=c.weight_decay,
        logging_steps=c.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a non-finite loss stops the run (FiniteGuard), it is never averaged away
        save_strategy="steps",
        save_steps=c.save_steps,
        save_total_limit=c.save_total_limit,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=c.eval_steps or None,
        seed=c.seed,
        report_to=c.report_to,
        dataloader_drop_last=True,
        dataloader_num_workers=c.dataloader_num_workers,
        use_cpu=not cuda,
        ddp_backend="gloo" if plan.world_size > 1 and not cuda else None,
        ddp_find_unused_parameters=False,  # every parameter takes part in every step (RecipeTrainer.train)
        multi_dataset_batch_sampler=c.batch_sampler(plan),
        router_mapping=c.column_tasks(),
    )
