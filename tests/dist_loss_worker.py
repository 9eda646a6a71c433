"""Run by tests/losses/test_losses.py under torchrun (2 CPU processes, gloo): one rank's half of a batch.

Writes rank-averaged loss and parameter gradients (what DDP would apply) to argv[2].
"""

import sys

import torch
import torch.distributed as dist

from mm_st import build_model
from mm_st.losses import MultimodalInfoNCELoss
from tests.losses.test_losses import dist_batch

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model = build_model(sys.argv[1], recipe="e5v", dtype=torch.float64).eval()
loss_fn = MultimodalInfoNCELoss(model, temperature=0.05, symmetric=True, hard_negative_scope="own",
                                modality_weight=0.3, gather_across_devices=True)
columns = dist_batch()
half = len(columns[0]) // world
features = [model.preprocess(col[rank * half:(rank + 1) * half]) for col in columns]
assert all("mm_st_groups" in f for f in features)  # each rank's half mixes modalities
loss = loss_fn(features, None)
loss.backward()
result = {"loss": loss.detach()}
for name, param in model.named_parameters():
    if param.grad is not None:
        result[name] = param.grad.detach().clone()
for value in result.values():
    dist.all_reduce(value)
    value /= world
if rank == 0:
    torch.save(result, sys.argv[2])
dist.destroy_process_group()
