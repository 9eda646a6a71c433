"""The processes of one ``torchrun`` / ``accelerate launch`` run: who writes, who waits, and DDP's view of the model.

A recipe's files are written by one process and read by the others: the embedded default's backbone and data (one
process per node, the *local* main), a stage's saved model, evaluation scores and MM-Embed's mined negatives (the
main process). :func:`main_process_first` runs a block on the writer first and on the others after it has finished;
:func:`barrier` makes every process wait at a stage boundary. Both wait on a gloo group with a long timeout
(:data:`WAIT_TIMEOUT`), as the main process may mine or evaluate for hours while the others wait; a failing process
ends the launch (torchrun stops the others). In one process every function here does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch

WAIT_TIMEOUT = timedelta(hours=24)  # how long a process waits for the main one (mining a large pool, evaluating)
_wait_group: Any = None


def world_size() -> int:
    """Processes in this run (torchrun / accelerate set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def is_local_main() -> bool:
    """The first process of this node (it writes the node's copy of the embedded default)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def _group() -> Any:
    """The gloo group the processes wait on; starts the default process group first (as the trainer would:
    accelerate's ``PartialState``, gloo on CPU) when no trainer has yet."""
    global _wait_group
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        cuda = torch.cuda.is_available()
        PartialState(cpu=not cuda, **({"timeout": timedelta(seconds=1800)} if cuda else {"backend": "gloo"}))
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return _wait_group


def barrier() -> None:
    """Every process waits here until all have arrived (nothing in one process)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier(group=_group())


@contextmanager
def main_process_first(local: bool = False) -> Iterator[None]:
    """The main process (``local``: each node's first) runs the block first, the others once it has finished:
    what it writes there, they read."""
    first = is_local_main() if local else is_main_process()
    if not first:
        barrier()
    yield
    if first:
        barrier()


@contextmanager
def every_parameter_used(model: torch.nn.Module) -> Iterator[None]:
    """While the block runs, each forward pass with gradients adds zero times one element of every trainable
    parameter to its ``sentence_embedding``: every parameter takes part in every backward pass, whatever the
    modalities of the step's columns. DDP needs that without ``find_unused_parameters``, which breaks when a step
    makes several forward passes (one per column and modality group) that use different parameters (a text-only
    column leaves the vision tower out). Values and gradients are unchanged (it adds exact zeros)."""
    trainable = [p for p in model.parameters() if p.requires_grad]

    def add_zero(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if torch.is_grad_enabled() and isinstance(output, dict) and "sentence_embedding" in output:
            embedding = output["sentence_embedding"]
            zero = torch.stack([p.view(-1)[0].to(embedding.dtype) for p in trainable]).sum() * 0
            output["sentence_embedding"] = embedding + zero
        return output

    handle = model.register_forward_hook(add_zero)
    try:
        yield
    finally:
        handle.remove()
