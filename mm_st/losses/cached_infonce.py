"""MultimodalInfoNCELoss with GradCache: the global batch is not limited by accelerator memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import Tensor

from mm_st.losses.infonce import MultimodalInfoNCELoss


class CachedMultimodalInfoNCELoss(CachedLossMixin, MultimodalInfoNCELoss):
    def __init__(
        self,
        model,
        temperature: float = 0.02,
        hard_negative_scope: Literal["shared", "own"] = "shared",
        mask_duplicates: bool = True,
        modality_weight: float = 0.0,
        symmetric: bool = False,
        gather_across_devices: bool = False,
        mini_batch_size: int = 32,
        show_progress_bar: bool = False,
    ) -> None:
        """:class:`~mm_st.losses.MultimodalInfoNCELoss` computed with GradCache (Gao et al., 2021).

        The batch is embedded in mini-batches of ``mini_batch_size`` without gradients, the loss is
        computed over the whole batch and back-propagated to the embeddings, then each mini-batch is
        embedded again with gradients and the cached embedding gradients are pushed through it
        (sentence-transformers' ``CachedLossMixin``, which also splits ``pixel_values`` and
        ``image_grid_thw`` per mini-batch). Loss value and parameter gradients equal the non-cached
        loss on the same batch; peak memory follows ``mini_batch_size``, not the batch size. Unlike
        gradient accumulation, every query still sees every candidate of the whole batch.

        Args:
            model, temperature, hard_negative_scope, mask_duplicates, modality_weight, symmetric, gather_across_devices:
                as :class:`~mm_st.losses.MultimodalInfoNCELoss`.
            mini_batch_size: inputs embedded at once; lower uses less memory and is slower.
            show_progress_bar: show a progress bar over mini-batches.

        Inputs:
            As :class:`~mm_st.losses.MultimodalInfoNCELoss`: (anchor, positive[, negatives...]) columns.

        Example:
            ::

                from mm_st.losses import CachedMultimodalInfoNCELoss

                loss = CachedMultimodalInfoNCELoss(model, temperature=0.02, mini_batch_size=8)
                # train with per_device_train_batch_size=1024: 1024 in-batch candidates per query
        """
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}.")
        MultimodalInfoNCELoss.__init__(
            self, model, temperature, hard_negative_scope, mask_duplicates, modality_weight, symmetric, gather_across_devices
        )
        self.mini_batch_size = mini_batch_size
        self.show_progress_bar = show_progress_bar

    def forward(self, sentence_features: Iterable[dict[str, Any]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        if len(features) < 2:
            raise ValueError(f"Expected an anchor and at least one candidate column, got {len(features)} column(s).")
        # The loss takes no labels: the candidates' keys travel to calculate_loss in that slot of
        # forward_cached (nothing is kept on the loss between calls).
        return self.forward_cached(features, self.candidate_keys(features))

    def calculate_loss(
        self,
        reps: list[list[Tensor]],
        keys: tuple[list[Tensor] | None, list[Tensor] | None] = (None, None),
        *,
        with_backward: bool = False,
    ) -> Tensor:
        """The loss from per-mini-batch embeddings and ``(candidate keys, candidate modalities)``."""
        embeddings = [torch.cat(column) for column in reps]
        loss = self.compute_multimodal_loss(embeddings, *keys)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}
