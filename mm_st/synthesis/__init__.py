"""mmE5-style synthetic multimodal multilingual data generation (open models, at scale).

Plan (task, modality combination, language, real images; seeded, stable ids) -> one single-pass
request per sample to a multimodal LLM (interpret images, write, self-evaluate, revise; strict JSON)
-> crash-safe JSONL journal -> export in the ``intfloat/mmE5-synthetic`` layout (+ dataset card, Hub push).

Example:
    >>> import tempfile
    >>> from mm_st.synthesis import DryRunBackend, SynthesisConfig, synthesize, export_dataset
    >>> run, out = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> config = SynthesisConfig(num_samples=6, languages={"en": 0.5, "de": 0.5}, seed=1)
    >>> _ = synthesize(config, DryRunBackend(), run, progress=False, verbose=False)  # a dry run: no model
    >>> ds = export_dataset(run, out)
    >>> sum(len(d) for d in ds.values())
    6
"""

from mm_st.synthesis.backends import (
    Backend,
    DryRunBackend,
    OpenAIChatBackend,
    Request,
    ScriptedBackend,
    TransformersBackend,
    TransportError,
)
from mm_st.synthesis.config import (
    COMBINATIONS,
    DEFAULT_LANGUAGE_WEIGHTS,
    DEFAULT_TASK_COMBINATIONS,
    LANGUAGES,
    TASKS,
    PlannedSample,
    SynthesisConfig,
    plan_samples,
)
from mm_st.synthesis.export import export_dataset, push_to_hub, render_card
from mm_st.synthesis.images import ImagePool
from mm_st.synthesis.prompts import PromptBuilder, SampleError
from mm_st.synthesis.runner import Journal, OutputDirInUse, format_summary, summarize, synthesize

__all__ = [
    "COMBINATIONS", "DEFAULT_LANGUAGE_WEIGHTS", "DEFAULT_TASK_COMBINATIONS", "LANGUAGES", "TASKS",
    "Backend", "DryRunBackend", "ImagePool", "Journal", "OpenAIChatBackend", "OutputDirInUse", "PlannedSample", "PromptBuilder", "Request",
    "SampleError", "ScriptedBackend", "SynthesisConfig", "TransformersBackend", "TransportError",
    "export_dataset", "format_summary", "plan_samples", "push_to_hub", "render_card", "summarize", "synthesize",
]  # fmt: skip
