"""The trainer a stage runs: sentence-transformers' trainer that stops at the first non-finite loss, gradient or
weight (naming the step), and the callbacks it trains with."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers import SentenceTransformerTrainer
from transformers import TrainerCallback

from mm_st.training.distributed import every_parameter_used


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or weight: training stopped, nothing of that step was saved."""


def first_non_finite(named_tensors: Any) -> str | None:
    """The name of the first tensor holding a NaN or infinity, else None."""
    for name, tensor in named_tensors:
        if tensor is not None and not torch.isfinite(tensor).all():
            return name
    return None


class FiniteGuard(TrainerCallback):
    """Stops training at the first non-finite gradient (before the optimizer step) or weight (after it,
    before any checkpoint of that step is saved), naming the step and the tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        name = first_non_finite((n, p.grad) for n, p in self.trainable)
        if name is not None:
            raise TrainingDiverged(f"step {state.global_step + 1}: non-finite gradient of {name}; training stopped "
                                   "before the optimizer step, nothing of this step was saved (lower --learning-rate, "
                                   "--max-grad-norm or check the data).")

    def on_optimizer_step(self, args, state, control, **kwargs):
        name = first_non_finite(self.trainable)
        if name is not None:
            raise TrainingDiverged(f"step {state.global_step + 1}: the optimizer step made {name} non-finite; training "
                                   "stopped, nothing of this step was saved (lower --learning-rate).")


class RecipeTrainer(SentenceTransformerTrainer):
    """sentence-transformers' trainer that stops at the first non-finite loss (naming the step) instead of
    averaging it away, and counts this run's optimizer steps; its checkpoints carry no load-time state of this
    machine, like ``model/``. Under DDP every trainable parameter takes part in every step
    (:func:`~mm_st.training.distributed.every_parameter_used`), whatever the modalities of its columns."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        from mm_st.portable import scrub_saved_model

        super()._save(output_dir, state_dict)  # also saves the processor again, with its load-time flags
        scrub_saved_model(output_dir if output_dir is not None else self.args.output_dir)

    def train(self, *args, **kwargs):
        if self.args.world_size == 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super().train(*args, **kwargs)
        with every_parameter_used(self.model):
            return super().train(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(f"step {self.state.global_step + 1}: the loss is {loss.item()} (non-finite); training "
                                   "stopped, nothing of this step was saved (lower --learning-rate or check the data).")
        return loss


class StepCounter(TrainerCallback):
    """Whether this run completed an optimizer step (a failure before the first one rolls the folder back)."""

    stepped = False

    def on_step_end(self, args, state, control, **kwargs):
        self.stepped = True
