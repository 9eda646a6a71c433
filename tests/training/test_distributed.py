"""mm_st.training.distributed in one process: the DDP helper that makes every parameter take part in a step (the
two-process runs are in tests/training/test_mmembed.py and tests/training/test_training.py)."""

from __future__ import annotations

import torch

from mm_st import build_model
from mm_st.testing import tiny_model
from mm_st.training import MMEmbedConfig
from mm_st.training.distributed import barrier, every_parameter_used, main_process_first


def test_every_parameter_takes_part_in_a_text_only_step_and_nothing_changes():
    """A text-only batch leaves the vision tower's adapters out of the graph; inside every_parameter_used they get
    a zero gradient (DDP needs every parameter in every backward), and embeddings and other gradients are the same."""
    model = build_model(tiny_model("qwen2_vl"), recipe="mmembed", dtype=torch.float64,
                        adapter=MMEmbedConfig(lora_dropout=0.0).adapter_config())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any(".visual." in n for n in trainable)

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        model.zero_grad(set_to_none=True)
        features = model.preprocess(["a red heart", "grinning face"])
        embedding = model(features)["sentence_embedding"]
        embedding.square().sum().backward()
        return embedding.detach(), {n: None if p.grad is None else p.grad.clone() for n, p in trainable.items()}

    plain, plain_grads = step()
    with every_parameter_used(model):
        touched, touched_grads = step()
    unused = sorted(n for n, g in plain_grads.items() if g is None)
    assert unused and all(".visual." in n for n in unused)
    assert all(g is not None for g in touched_grads.values())
    assert all(touched_grads[n].abs().max() == 0 for n in unused)
    assert torch.equal(touched, plain)
    for name, grad in plain_grads.items():
        if grad is not None:
            assert torch.equal(touched_grads[name], grad), name
    with torch.no_grad(), every_parameter_used(model):  # inference (evaluation during training) is left alone
        assert model(model.preprocess(["a cat"]))["sentence_embedding"].grad_fn is None
    plain_again, _ = step()  # the hook is gone after the block
    assert torch.equal(plain_again, plain)


def test_one_process_waits_for_nobody():
    order = []
    with main_process_first(), main_process_first(local=True):
        order.append("block")
    barrier()
    assert order == ["block"] and not torch.distributed.is_initialized()  # no process group started
