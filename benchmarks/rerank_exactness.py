"""Exactness of ``mm_st.rerank`` scores against a hand-written forward, every backbone family.

Reference per pair: the literal prompt written out by hand (the family's user turn, the candidate,
the query, the question, the open assistant turn), the backbone's own processor on that text (and
the image), the model's forward, and a softmax over the logits of the two answer tokens at the last
position (P(True)). mm_st: ``build_reranker(...).predict`` on all pairs of a family in ONE call
(text-only, image and image+text candidates mixed: left padding and modality grouping included).
Tiny random models (``mm_st.testing``) answer with "t"/"f" (their toy tokenizers have no single
"True" token); SmolLM2-135M (real weights, text only) with "True"/"False".

Run:
    .venv/bin/python benchmarks/rerank_exactness.py
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_pooling_real_lm import machine_info  # noqa: E402

QUESTION = "Does the above image match the caption? True or False"
TEXT_QUESTION = "Does the above passage answer the query? True or False"
LLAMA3 = ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
CHATML = ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
QWEN = "<|vision_start|><|image_pad|><|vision_end|>"
# family: (user-turn head, open assistant-turn tail, image placeholder), written out by hand
FAMILIES = {
    "llava": ("USER: ", " ASSISTANT:", "<image>"),
    "llava_next": (*LLAMA3, "<image>"),
    "mllama": (*LLAMA3, "<|image|>"),
    "qwen2_vl": (*CHATML, QWEN),
    "qwen2_5_vl": (*CHATML, QWEN),
    "qwen3_vl": (*CHATML, QWEN),
    "idefics3": ("<|im_start|>User:", "<end_of_utterance>\nAssistant:", "<image>"),
}


def reference(model, processor, prompt, images, ids) -> float:
    inputs = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits[0, -1]
    return torch.softmax(logits[ids].double(), 0)[0].item()


def main() -> None:
    torch.set_num_threads(1)
    from transformers import AutoProcessor, AutoTokenizer

    from mm_st.data import load_emoji
    from mm_st.rerank import build_reranker
    from mm_st.testing import tiny_model

    test = load_emoji("test")
    images = [test[i]["image"].convert("RGB") for i in range(2)]
    names = [test[i]["name_en"] for i in range(2)]
    start = time.perf_counter()
    lines = ["| backbone | answers | pairs in one call | max abs diff text | max abs diff image | max abs diff image+text |",
             "|---|---|---:|---:|---:|---:|"]
    worst = 0.0
    for family, (head, tail, placeholder) in FAMILIES.items():
        path = tiny_model(family)
        reranker = build_reranker(path, "image_caption", answers=("t", "f"))
        processor = AutoProcessor.from_pretrained(path)
        space = "" if tail.endswith("\n") else " "
        ids = [processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.tokenize(space + a))[0] for a in ("t", "f")]
        assert ids == [reranker[1].true_token_id, reranker[1].false_token_id], family
        cases = {  # kind: [(pair, hand-written prompt, images)]
            "text": [((f"the {n}", f"an emoji: {n}"), f"{head}an emoji: {n}\nthe {n}\n{QUESTION}{tail}", None) for n in names],
            "image": [((f"the {n}", im), f"{head}{placeholder}\nthe {n}\n{QUESTION}{tail}", [im]) for n, im in zip(names, images)],
            "image+text": [((n, {"text": "emoji", "image": im}), f"{head}{placeholder}\nemoji\n{n}\n{QUESTION}{tail}", [im])
                           for n, im in zip(names, images)],
        }
        pairs = [pair for rows in cases.values() for pair, _, _ in rows]
        got = reranker.predict(pairs, batch_size=len(pairs)).tolist()
        want = [reference(reranker[0].model, processor, prompt, ims, ids) for rows in cases.values() for _, prompt, ims in rows]
        diffs = [abs(a - b) for a, b in zip(got, want)]
        per_kind = [max(diffs[i * 2:(i + 1) * 2]) for i in range(3)]
        worst = max(worst, *per_kind)
        lines.append(f"| tiny {family} | t / f | {len(pairs)} | " + " | ".join(f"{d:.1e}" for d in per_kind) + " |")

    from mm_st.real_lm import smollm2_path

    path = smollm2_path()
    reranker = build_reranker(path, "text_query")
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = [tokenizer.convert_tokens_to_ids("True"), tokenizer.convert_tokens_to_ids("False")]
    assert ids == [reranker[1].true_token_id, reranker[1].false_token_id]
    rows = [(("What is the capital of France?", "Paris is the capital of France."),),
            (("What colour are bananas?", "Bananas are yellow and rich in potassium, a mineral the body needs."),)]
    got = reranker.predict([r[0] for r in rows]).tolist()
    want = []
    for (query, document), in rows:
        prompt = f"{CHATML[0]}{document}\n{query}\n{TEXT_QUESTION}{CHATML[1]}"
        with torch.inference_mode():
            logits = reranker[0].model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1]
        want.append(torch.softmax(logits[ids].double(), 0)[0].item())
    text_diff = max(abs(a - b) for a, b in zip(got, want))
    worst = max(worst, text_diff)
    lines.append(f"| SmolLM2-135M (real) | True / False | {len(rows)} | {text_diff:.1e} | n/a (text-only) | n/a |")

    print("\n".join(lines))
    print()
    print(f"Worst difference: {worst:.1e} (target <= 1e-5: {'met' if worst <= 1e-5 else 'NOT met'}).")
    print(machine_info(1))
    print(f"Runtime: {time.perf_counter() - start:.0f} s")
    print("Command: " + shlex.join([os.path.relpath(sys.executable), *sys.argv]))


if __name__ == "__main__":
    main()
