"""Multimodal InfoNCE: duplicate-aware, with hard-negative scope, an optional modality term and symmetry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.util.distributed import all_gather, all_gather_with_grad, get_rank
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from torch import Tensor

from mm_st.model import CONTENT_KEY, MODALITY_KEY, MultimodalSentenceTransformer


class MultimodalInfoNCELoss(MultipleNegativesRankingLoss):
    def __init__(
        self,
        model,
        temperature: float = 0.02,
        hard_negative_scope: Literal["shared", "own"] = "shared",
        mask_duplicates: bool = True,
        modality_weight: float = 0.0,
        symmetric: bool = False,
        gather_across_devices: bool = False,
    ) -> None:
        """InfoNCE over (anchor, positive, negative_1, ..., negative_n) columns of text, images or both.

        For query i, candidates are every positive in the batch plus the hard negatives; the logits
        are ``cos(q_i, d_j) / temperature`` and the loss is ``-log softmax`` of the own positive, with:

        - ``mask_duplicates``: a candidate whose content is identical to query i's positive (same
          text and same image bytes, e.g. two ImageNet queries labelled "goldfish") is removed from
          the denominator instead of counted as a negative. Identity is an exact hash of the inputs
          (:func:`mm_st.inputs.content_key`) that the model's ``preprocess`` adds to each column's
          features (the trainer's data collator calls it), read from the features the loss is given.
        - ``hard_negative_scope``: ``"shared"`` scores every hard negative in the batch against every
          query (VLM2Vec); ``"own"`` scores a hard negative only against its own query (mmE5).
        - ``modality_weight`` (MM-Embed's modality awareness): adds ``modality_weight * mean_i
          -log(1 - p_i)``, where ``p_i`` is the softmax mass query i puts on candidates whose
          modality (text / image / image+text) differs from its positive's. It is 0 when a batch
          holds one modality, and pushes the model to return the modality the query asks for.
        - ``symmetric``: also the document->query direction (each positive against all queries,
          queries whose positive is a duplicate masked), averaged with the query->document loss.

        Args:
            model: a model from :func:`mm_st.build_model` (a ``MultimodalSentenceTransformer``).
            temperature: softmax temperature (> 0); E5-V 0.05, mmE5 / VLM2Vec 0.02.
            hard_negative_scope: ``"shared"`` or ``"own"``.
            mask_duplicates: remove duplicates of the positive from the denominator.
            modality_weight: weight of the modality term (>= 0).
            symmetric: add the document->query direction.
            gather_across_devices: in multi-process training, score each query against the candidates
                of all ranks (duplicate masking applied across ranks too); gradients flow back to the
                rank that embedded each candidate.

        Inputs:
            +--------------------------------------------+--------+
            | Texts                                      | Labels |
            +============================================+========+
            | (anchor, positive) pairs                   | none   |
            +--------------------------------------------+--------+
            | (anchor, positive, negative_1, ...) tuples | none   |
            +--------------------------------------------+--------+
            Each column holds str, PIL images, or ``{"text", "image"}`` dicts (None = absent).

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformerTrainer
                from mm_st import build_model
                from mm_st.data import load_emoji
                from mm_st.losses import MultimodalInfoNCELoss
                from mm_st.testing import tiny_model

                model = build_model(tiny_model("qwen2_vl"), recipe="e5v")
                emoji = load_emoji("train").select(range(64))
                train = Dataset.from_dict({"image": emoji["image"], "name": emoji["name_en"]})
                loss = MultimodalInfoNCELoss(model, temperature=0.05)
                SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss).train()
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if hard_negative_scope not in ("shared", "own"):
            raise ValueError(f"hard_negative_scope must be 'shared' or 'own', got {hard_negative_scope!r}.")
        if modality_weight < 0:
            raise ValueError(f"modality_weight must be >= 0, got {modality_weight}.")
        super().__init__(model, scale=1.0 / temperature, gather_across_devices=gather_across_devices)
        self.hard_negative_scope = hard_negative_scope
        self.mask_duplicates = mask_duplicates
        self.modality_weight = modality_weight
        self.symmetric = symmetric
        if self.needs_keys and not isinstance(model, MultimodalSentenceTransformer):
            raise TypeError(
                "mask_duplicates / modality_weight need a model from mm_st.build_model or mm_st.load_model "
                f"(got {type(model).__name__}), whose preprocess reports input content and modality."
            )

    @property
    def needs_keys(self) -> bool:
        """Whether the loss reads the candidates' content keys (duplicate masking or the modality term)."""
        return bool(self.mask_duplicates or self.modality_weight)

    def forward(self, sentence_features: Iterable[dict[str, Any]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        keys, modalities = self.candidate_keys(features)
        embeddings = embed_columns(self.model, features)
        return self.compute_multimodal_loss(embeddings, keys, modalities)

    def candidate_keys(self, features: list[dict[str, Any]]) -> tuple[list[Tensor] | None, list[Tensor] | None]:
        """Content keys and modality ids of the candidate columns (1, 2, ...), read from their features.

        ``(None, None)`` when the loss needs none; a column without them is an error naming it.
        """
        if not self.needs_keys:
            return None, None
        if len(features) < 2:
            raise ValueError(f"Expected an anchor and at least one candidate column, got {len(features)} column(s).")
        for column, feature in enumerate(features[1:], start=1):
            if CONTENT_KEY not in feature or MODALITY_KEY not in feature:
                raise ValueError(
                    f"Column {column} has no content keys ({CONTENT_KEY!r}, {MODALITY_KEY!r}), which "
                    "mask_duplicates / modality_weight need. A model from mm_st.build_model / mm_st.load_model "
                    "adds them in preprocess (the trainer's data collator calls it per column), except under "
                    "torch.inference_mode (as in encode) or with content_keys=False. Preprocess the columns with "
                    "such a model, or pass mask_duplicates=False, modality_weight=0."
                )
        return [f[CONTENT_KEY] for f in features[1:]], [f[MODALITY_KEY] for f in features[1:]]

    def compute_multimodal_loss(
        self,
        embeddings: list[Tensor],
        candidate_keys: list[Tensor | None] | None = None,
        candidate_modalities: list[Tensor | None] | None = None,
    ) -> Tensor:
        """The loss from column embeddings ``[anchor, positive, negatives...]`` and candidate keys/modalities.

        ``candidate_keys`` / ``candidate_modalities``: one tensor per candidate column (rows in column
        order), needed with ``mask_duplicates`` / ``modality_weight``; an error names what is missing.
        """
        if len(embeddings) < 2:
            raise ValueError(f"Expected an anchor and at least one candidate column, got {len(embeddings)} column(s).")
        batch = embeddings[0].size(0)
        for column, emb in enumerate(embeddings):
            if emb.size(0) != batch:
                raise ValueError(f"Column {column} has {emb.size(0)} rows but the anchor column has {batch}.")
        columns = len(embeddings) - 1
        keys = _stack(candidate_keys, columns, batch, "candidate_keys", "mask_duplicates" if self.mask_duplicates else None)
        modalities = _stack(
            candidate_modalities, columns, batch, "candidate_modalities", "modality_weight" if self.modality_weight else None
        )
        offset = 0
        if self.gather_across_devices:
            # Local queries against the candidates of every rank (gradients flow back to their rank).
            embeddings = [all_gather_with_grad(emb) for emb in embeddings]
            keys = None if keys is None else _gather_columns(keys.to(embeddings[0].device), columns)
            modalities = None if modalities is None else _gather_columns(modalities.to(embeddings[0].device), columns)
            offset = get_rank() * batch
        world = embeddings[0].size(0)  # queries over all ranks
        device = embeddings[0].device
        rows = torch.arange(batch, device=device)
        own = rows + offset  # global index of each local query (and of its positive)
        queries, docs = embeddings[0][own], torch.cat(embeddings[1:], dim=0)
        logits = self.similarity_fct(queries, docs) * self.scale  # (B local, world * columns)
        excluded = torch.zeros_like(logits, dtype=torch.bool)
        if self.mask_duplicates:
            keys = keys.to(device)
            excluded |= keys.unsqueeze(0) == keys[own].unsqueeze(1)
        if self.hard_negative_scope == "own" and columns > 1:
            owner = torch.arange(world, device=device).repeat(columns - 1)
            excluded[:, world:] |= owner.unsqueeze(0) != own.unsqueeze(1)
        excluded[rows, own] = False  # the own positive always stays
        logits = logits.masked_fill(excluded, float("-inf"))
        log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        loss = -log_probs[rows, own].mean()

        if self.symmetric:
            back = self.similarity_fct(docs[own], embeddings[0]) * self.scale  # (B local positives, world queries)
            if self.mask_duplicates:
                same = keys[own].unsqueeze(1) == keys[:world].unsqueeze(0)
                same[rows, own] = False
                back = back.masked_fill(same, float("-inf"))
            loss = (loss + -(back[rows, own] - torch.logsumexp(back, dim=1)).mean()) / 2

        if self.modality_weight:
            modalities = modalities.to(device)
            wrong = (modalities.unsqueeze(0) != modalities[own].unsqueeze(1)) & ~excluded
            wrong_mass = (log_probs.exp() * wrong).sum(dim=1).clamp(max=1 - 1e-6)
            loss = loss + self.modality_weight * -torch.log1p(-wrong_mass).mean()
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "hard_negative_scope": self.hard_negative_scope,
            "mask_duplicates": self.mask_duplicates,
            "modality_weight": self.modality_weight,
            "symmetric": self.symmetric,
            "gather_across_devices": self.gather_across_devices,
        }


def _gather_columns(stacked: Tensor, columns: int) -> Tensor:
    """All-gather a ``(columns * B,)`` tensor so it is laid out like the gathered candidates."""
    return torch.cat([all_gather(part) for part in stacked.chunk(columns)], dim=0)


def _stack(per_column: list[Tensor] | None, columns: int, batch: int, name: str, needed_by: str | None) -> Tensor | None:
    """Concatenate per-column tensors in candidate order; None if not given and not needed."""
    if per_column is None:
        if needed_by:
            raise ValueError(f"{needed_by} needs {name}: one tensor per candidate column ({columns}), got None.")
        return None
    if len(per_column) != columns or any(t is None or t.shape != (batch,) for t in per_column):
        shapes = [None if t is None else tuple(t.shape) for t in per_column]
        raise ValueError(f"{name} must hold {columns} tensor(s) of shape ({batch},), one per candidate column; got {shapes}.")
    return torch.cat(list(per_column), dim=0)
