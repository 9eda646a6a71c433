"""Contrastive losses for multimodal embedding training (see each class's docstring)."""

from mm_st.losses.cached_infonce import CachedMultimodalInfoNCELoss
from mm_st.losses.infonce import MultimodalInfoNCELoss

__all__ = ["CachedMultimodalInfoNCELoss", "MultimodalInfoNCELoss"]
