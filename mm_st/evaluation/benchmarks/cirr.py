"""CIRR composed image retrieval (official protocol): the ``CIRRComposedImageRetrieval`` task; no benchmark of its
own (run it with ``-t CIRRComposedImageRetrieval``).

Data: ``$MM_ST_CIRR_DATA`` / ``$MM_ST_CIRR_IMAGES`` (:data:`DATA`).
"""

from __future__ import annotations

from mm_st.evaluation.data import SOURCES
from mm_st.evaluation.tasks import CIRRComposedImageRetrieval

DATA = SOURCES["cirr"]  # where its data come from: variables, layout, Hub default

TASKS = (CIRRComposedImageRetrieval,)
BENCHMARK = None
