"""Contrastive losses for multimodal embedding training (see each class's docstring)."""

from mm_st.losses.infonce import MultimodalInfoNCELoss

__all__ = ["MultimodalInfoNCELoss"]
