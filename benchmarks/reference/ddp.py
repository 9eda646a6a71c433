"""Multi-process loss: the reference's ``MMEBModel.forward`` under ``torch.distributed`` vs mm_st's gathered loss.

Two CPU processes (gloo), 4 rows per rank, fixed random float64 raw embeddings (query, target and, for mmE5,
3 negatives per query), L2-normalised inside both paths:

- reference: its own ``MMEBModel.forward`` (VLM2Vec ``src/model/model.py``, mmE5 ``src/model.py``) with
  ``encode_input`` replaced by the reference's own ``_pooling`` of the given rows (``pooling="last"``,
  ``normalize=True``), so its gather, scores, cross-entropy and world-size scaling run as written;
- mm_st: ``MultimodalInfoNCELoss(temperature=0.02, hard_negative_scope=..., mask_duplicates=False,
  gather_across_devices=True).compute_multimodal_loss``.

DDP averages parameter gradients over ranks, so the per-rank gradient that reproduces full-batch training is
W x d(L_full)/d(x_local), with L_full the single-process loss of all W x 4 rows (each path's own code with
distribution off). Printed and written per rank: each path's local gradient as a multiple of that (least-squares
factor, and the largest deviation from factor x W x full), and the losses each path reports.

Usage::

    python benchmarks/reference/ddp.py vlm2vec --upstream path/to/VLM2Vec
    python benchmarks/reference/ddp.py mme5 --upstream path/to/mmE5
"""

from __future__ import annotations

import json
import socket
import types
from pathlib import Path

import common

WORLD, LOCAL, DIM, NEGATIVES = 2, 4, 16, 3
SETTINGS = {
    "vlm2vec": {"module": "src.model.model", "scope": "shared", "negatives": 0},
    "mme5": {"module": "src.model", "scope": "own", "negatives": NEGATIVES},
}


def parse_args():
    parser = common.base_parser(__doc__)
    parser.add_argument("reference", choices=tuple(SETTINGS))
    return parser.parse_args()


def raw_rows(negatives: int):
    """Fixed random raw embeddings for all W x LOCAL rows: query, target, negatives (rows, k, dim)."""
    import torch

    g = torch.Generator().manual_seed(0)
    q, t = (torch.randn(WORLD * LOCAL, DIM, generator=g, dtype=torch.float64) for _ in range(2))
    n = torch.randn(WORLD * LOCAL, negatives, DIM, generator=g, dtype=torch.float64)
    return q, t, n


def worker(rank: int, args, port: int) -> None:
    import importlib

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    setting = SETTINGS[args.reference]
    common.import_upstream(args.upstream, args.reference)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    MMEBModel = importlib.import_module(setting["module"]).MMEBModel
    common.quiet_logging()
    from mm_st import build_model
    from mm_st.losses import MultimodalInfoNCELoss
    from mm_st.testing import tiny_model

    negatives = setting["negatives"]
    q, t, n = raw_rows(negatives)
    mine = slice(rank * LOCAL, (rank + 1) * LOCAL)

    encoder = torch.nn.Identity()  # never called: encode_input is the reference's own _pooling of the given rows
    encoder.config = types.SimpleNamespace(hidden_size=DIM)

    def reference_loss(distributed: bool, query, target, negative):
        model = MMEBModel(encoder=encoder, pooling="last", normalize=True, temperature=0.02)
        model.is_ddp = distributed  # the single-process full batch: the same code with distribution off

        def encode_input(given):  # each row as a one-token sequence: _pooling takes that token and normalises it
            rows = given["rows"]
            return model._pooling(rows.unsqueeze(1), torch.ones(len(rows), 1, dtype=torch.long))

        model.encode_input = encode_input
        # negatives flattened query-major, as its collator does
        extra = {"neg": {"rows": negative.reshape(-1, DIM)}} if negatives else {}
        return model(qry={"rows": query}, tgt={"rows": target}, **extra)

    mm_st_model = build_model(tiny_model("qwen2_vl"), recipe=args.reference, prompt_format="train")

    def mm_st_loss(distributed: bool, query, target, negative):
        loss = MultimodalInfoNCELoss(mm_st_model, temperature=0.02, hard_negative_scope=setting["scope"],
                                     mask_duplicates=False, gather_across_devices=distributed)  # fmt: skip
        columns = [query, target] + [negative[:, k] for k in range(negatives)]
        return loss.compute_multimodal_loss([F.normalize(c, dim=-1) for c in columns])

    report = {"rank": rank}
    for side, fn in (("reference", reference_loss), ("mm_st", mm_st_loss)):
        full = [x.clone().requires_grad_() for x in (q, t, n)]
        full_loss = fn(False, *full)
        full_loss.backward()
        want = torch.cat([WORLD * x.grad[mine].flatten() for x in full[: 3 if negatives else 2]])
        local = [x[mine].clone().requires_grad_() for x in (q, t, n)]
        local_loss = fn(True, *local)
        local_loss.backward()
        got = torch.cat([x.grad.flatten() for x in local[: 3 if negatives else 2]])
        factor = float(got @ want / (want @ want))
        report[side] = {
            "loss_full_batch": float(full_loss.detach()), "loss_this_rank": float(local_loss.detach()),
            "local_grad_over_W_x_full_grad": factor,
            "max_abs_dev_from_factor": float((got - factor * want).abs().max()),
            "max_abs_diff_vs_W_x_full_grad": float((got - want).abs().max()),
        }  # fmt: skip
    reports = [None] * WORLD
    dist.all_gather_object(reports, report)
    if rank == 0:
        common.write_result(args, f"ddp_{args.reference}", {
            "reference": args.reference, "commit": common.upstream_commit(args.upstream), "world_size": WORLD,
            "rows_per_rank": LOCAL, "dim": DIM, "negatives_per_query": negatives, "machine": common.machine(args),
            "ranks": reports,
        })  # fmt: skip
        print(json.dumps(reports, indent=1))
    dist.destroy_process_group()


def main() -> None:
    args = parse_args()
    common.setup(args)
    import torch.multiprocessing as mp

    from mm_st.testing import tiny_model

    tiny_model("qwen2_vl")  # written once here, read by both workers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args, port), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
