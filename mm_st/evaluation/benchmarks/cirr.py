"""CIRR composed image retrieval (official protocol): the ``CIRRComposedImageRetrieval`` task; no benchmark of its
own (run it with ``-t CIRRComposedImageRetrieval``).

Data: ``$MM_ST_CIRR_DATA`` / ``$MM_ST_CIRR_IMAGES`` (:data:`LAYOUT`).
"""

from __future__ import annotations

from mm_st.evaluation.data import CIRR_LAYOUT as LAYOUT
from mm_st.evaluation.data import ENV
from mm_st.evaluation.tasks import CIRRComposedImageRetrieval

DATA_ENV, IMAGES_ENV = ENV["cirr"]

TASKS = (CIRRComposedImageRetrieval,)
BENCHMARK = None
