"""Zero-shot reranking with a (multimodal) LLM, as in MM-Embed: P("True") for a True/False question.

:func:`build_reranker` turns a multimodal LLM of any :mod:`mm_st.templates` family (or a text-only
causal LM) into a sentence-transformers ``CrossEncoder`` made of ST's own modules only:
``Transformer(transformer_task="any-to-any" | "text-generation")`` with a chat template that lays out
each (query, document) pair and the question, then ``LogitScore(true_id, false_id)``. The score is
``sigmoid(logit[True] - logit[False])``, i.e. the softmax over the two answer tokens at the position
after the prompt (``score="probability"``, MM-Embed's P(True)), or the logit margin itself
(``score="margin"``). A saved reranker loads with a plain ``CrossEncoder(path)``: no mm_st, no
``trust_remote_code``.

Prompts are data (:data:`RERANK_PROMPTS`): a question plus a layout with ``<document>``, ``<query>``
and ``<question>`` markers, rendered inside the backbone's chat turn (the user turn, then an open
assistant turn, so the next token is the answer). A side's images come first, then its text, joined
by ``\\n``. Every registry prompt is saved as an ST prompt, so ``predict(pairs, prompt_name=...)``
switches between them, and ``prompt=`` takes any question (or a full layout with the markers).

Answer tokens: the answer is tokenized as it would follow the rendered prompt: ``"True"`` after a
prompt that ends in whitespace (ChatML / Llama-3 turns end in ``\\n``), ``" True"`` after one that does
not (``[/INST]``, ``ASSISTANT:``, ``Assistant:``). Each answer must be exactly one token there; else
:func:`build_reranker` raises, naming the word and its tokens (pass ``answers=`` to choose others).

:func:`retrieve_and_rerank` runs an embedding model over a corpus, keeps each query's top ``k`` and
reranks them with the reranker (all pairs of all queries batched together, ``batch_size`` pairs per
forward, progress bars from sentence-transformers).

Example:
    >>> from mm_st import build_model
    >>> from mm_st.rerank import build_reranker, retrieve_and_rerank
    >>> from mm_st.testing import tiny_model
    >>> reranker = build_reranker(tiny_model("qwen2_vl"), "image_caption", answers=("t", "f"))
    >>> float(reranker.predict(("a red square", "a blue circle"))) < 1.0
    True
    >>> embedder = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    >>> hits = retrieve_and_rerank(embedder, reranker, ["a red square"], ["a blue circle", "a red box"], k=2)
    >>> sorted(hit["corpus_id"] for hit in hits[0])
    [0, 1]
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sentence_transformers import CrossEncoder
from sentence_transformers.base.modules import Transformer
from sentence_transformers.cross_encoder.modules import LogitScore

from mm_st import templates
from mm_st.builder import loading_kwargs
from mm_st.inputs import has_image, normalize_input

QUERY, DOCUMENT, QUESTION = "<query>", "<document>", "<question>"
# The candidate first, then the query, then the question: "Does the ABOVE daily-life image match the
# caption?" (MM-Embed) asks about a candidate image shown before the caption. The exact layout of
# MM-Embed's reranking prompt is not in its released code that we could see: this order is mm_st's reading.
DEFAULT_LAYOUT = f"{DOCUMENT}\n{QUERY}\n{QUESTION}"
SCORES = {"probability": torch.nn.Sigmoid, "margin": torch.nn.Identity}


@dataclass(frozen=True)
class RerankPrompt:
    """A True/False question and where the pair goes (``layout``, with ``<document>``/``<query>``/``<question>``)."""

    name: str
    question: str
    layout: str = DEFAULT_LAYOUT
    source: str = ""

    @property
    def text(self) -> str:
        """The full prompt (the layout with the question filled in), as saved in ST's ``prompts``."""
        return self.layout.replace(QUESTION, self.question)


_MMEMBED = (
    "MM-Embed (arXiv 2411.02571) paper text, section on zero-shot reranking with LLaVA-Next, as quoted in "
    "paper-facts.md; nvidia/MM-Embed ships no reranking code we could see, so the layout is mm_st's (DEFAULT_LAYOUT)"
)
_MM_ST = "mm_st's own prompt (not from a paper)"
RERANK_PROMPTS: dict[str, RerankPrompt] = {
    p.name: p
    for p in (
        RerankPrompt("mmembed_daily_life", "Does the above daily-life image match the caption? True or False", source=_MMEMBED),
        RerankPrompt("image_caption", "Does the above image match the caption? True or False", source=_MM_ST),
        RerankPrompt("text_query", "Does the above passage answer the query? True or False", source=_MM_ST),
        # Query images must come before document images in the text: processors take a conversation's
        # images in message order, and sentence-transformers puts the query's message first.
        RerankPrompt(
            "composed_image",
            "Does the second image show the first image changed as the text asks? True or False",
            layout=f"{QUERY}\n{DOCUMENT}\n{QUESTION}",
            source=_MM_ST,
        ),
    )
}

# The chat turn a reranker prompt goes in: the user turn plus an OPEN assistant turn (the next token is
# the answer). These are templates.WRAPPERS' turns, except where that one carries E5-V's extra text.
GENERATION_TURNS: dict[str, str] = {
    # templates.WRAPPERS["llama3"] ends in E5-V's " \n" line; the Llama-3 chat format opens the turn with "\n\n".
    "llama3": "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
}
_TRAIN_ONLY_WRAPPERS = ("llama3_upstream_train",)


def generation_turn(wrapper: str) -> str:
    """The chat turn (``{}`` = the prompt) a reranker uses for a :data:`mm_st.templates.WRAPPERS` name."""
    if wrapper not in templates.WRAPPERS or wrapper in _TRAIN_ONLY_WRAPPERS:
        usable = sorted(set(templates.WRAPPERS) - set(_TRAIN_ONLY_WRAPPERS))
        raise ValueError(f"Unknown reranker wrapper {wrapper!r}. Known: {', '.join(usable)}.")
    return GENERATION_TURNS.get(wrapper, templates.WRAPPERS[wrapper].template)


def resolve_prompt(prompt: str | RerankPrompt) -> RerankPrompt:
    """A registry name, a :class:`RerankPrompt`, or a literal question (or full layout with markers)."""
    if isinstance(prompt, RerankPrompt):
        resolved = prompt
    elif isinstance(prompt, str) and prompt in RERANK_PROMPTS:
        resolved = RERANK_PROMPTS[prompt]
    elif isinstance(prompt, str):
        has_markers = QUERY in prompt or DOCUMENT in prompt
        resolved = RerankPrompt("custom", QUESTION if has_markers else prompt, prompt if has_markers else DEFAULT_LAYOUT)
    else:
        raise TypeError(f"prompt must be a str or a RerankPrompt, got {type(prompt).__name__}.")
    check_prompt(resolved.text, resolved.name)
    return resolved


def check_prompt(text: str, name: str | None = None) -> None:
    """Refuse an empty prompt, or a full one without exactly one ``<query>`` and one ``<document>``."""
    if not isinstance(text, str) or not text.replace(QUERY, "").replace(DOCUMENT, "").strip():
        raise ValueError(
            f"The rerank prompt{f' {name!r}' if name else ''} is empty: a reranker needs a True/False question, e.g. "
            f"{RERANK_PROMPTS['mmembed_daily_life'].question!r} (see mm_st.rerank.RERANK_PROMPTS)."
        )
    for marker in (QUERY, DOCUMENT):
        if text.count(marker) != 1:
            raise ValueError(
                f"The rerank prompt{f' {name!r}' if name else ''} has {text.count(marker)} {marker} markers; a full prompt places the "
                f"query and the document once each, e.g. {DEFAULT_LAYOUT!r} with the question for {QUESTION}."
            )


def _lit(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_HEADER = re.compile(r"\{#- mm_st reranker (\{.*\}) -#\}")
_DEFAULT_PROMPT = re.compile(r"\{%- set DEFAULT_PROMPT = (\".*\") -%\}")

# Jinja: gather the pair (query / document messages; a lone user message counts as the query), the
# question (a system message, ST's prompt=), check, lay out, wrap in the chat turn.
_JINJA = """\
{%- set ns = namespace(query='', query_images=0, document='', document_images=0, prompt='', has_document=false) -%}
{%- for message in messages -%}
{%- set parts = [{'type': 'text', 'text': message['content']}] if message['content'] is string else message['content'] -%}
{%- if message['role'] == 'document' -%}{%- set ns.has_document = true -%}{%- endif -%}
{%- for part in parts -%}
{%- if message['role'] == 'system' -%}{%- if part['type'] == 'text' -%}{%- set ns.prompt = ns.prompt + part['text'] -%}{%- endif -%}
{%- elif message['role'] == 'document' -%}
{%- if part['type'] == 'image' -%}{%- set ns.document_images = ns.document_images + 1 -%}
{%- elif part['type'] == 'text' -%}{%- set ns.document = ns.document + part['text'] -%}{%- endif -%}
{%- else -%}
{%- if part['type'] == 'image' -%}{%- set ns.query_images = ns.query_images + 1 -%}
{%- elif part['type'] == 'text' -%}{%- set ns.query = ns.query + part['text'] -%}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- endfor -%}
{%- if not ns.has_document -%}{{- raise_exception(NOT_A_PAIR) -}}{%- endif -%}
{%- if (ns.query_images or ns.document_images) and not IMAGE_BLOCK -%}{{- raise_exception(TEXT_ONLY) -}}{%- endif -%}
{%- set prompt = ns.prompt if ns.prompt.strip() else DEFAULT_PROMPT -%}
{%- if '<query>' not in prompt and '<document>' not in prompt -%}{%- set prompt = LAYOUT.replace('<question>', prompt) -%}{%- endif -%}
{%- if prompt.count('<query>') != 1 or prompt.count('<document>') != 1 -%}{{- raise_exception(MARKERS) -}}{%- endif -%}
{%- if ns.query_images and ns.document_images and prompt.find('<document>') < prompt.find('<query>') -%}{{- raise_exception(IMAGE_ORDER) -}}{%- endif -%}
{%- set query = IMAGE_BLOCK * ns.query_images + ('\\n' if ns.query_images and ns.query else '') + ns.query -%}
{%- set document = IMAGE_BLOCK * ns.document_images + ('\\n' if ns.document_images and ns.document else '') + ns.document -%}
{{- BOS + HEAD + (prompt.split('<document>') | map('replace', '<query>', query) | join(document)) + TAIL -}}
"""

IMAGE_ORDER_ERROR = (
    "The pair has images in both the query and the document, but the prompt places <document> before <query>: "
    "processors take a conversation's images in message order (the query's first), so the images would be swapped. "
    "Use a prompt whose layout puts <query> first, e.g. mm_st.rerank.RERANK_PROMPTS['composed_image']."
)


def render_reranker_template(prompt: RerankPrompt, family: str, wrapper: str, bos: str = "") -> str:
    """The Jinja chat template of a reranker (saved with the model; what plain sentence-transformers renders)."""
    fam = templates.get_family(family)
    head, tail = generation_turn(wrapper).split("{}")
    constants = {
        "DEFAULT_PROMPT": _lit(prompt.text),
        "LAYOUT": _lit(DEFAULT_LAYOUT),
        "IMAGE_BLOCK": _lit(fam.image_placeholder or ""),
        "BOS": _lit(bos),
        "HEAD": _lit(head),
        "TAIL": _lit(tail),
        "NOT_A_PAIR": _lit("A reranker scores (query, document) pairs; this input is not a pair."),
        "TEXT_ONLY": _lit("This reranker's backbone is a text-only language model, and the pair holds an image."),
        "MARKERS": _lit(f"A full rerank prompt places {QUERY} and {DOCUMENT} once each."),
        "IMAGE_ORDER": _lit(IMAGE_ORDER_ERROR),
    }
    meta = {"prompt": prompt.name, "family": fam.name, "wrapper": wrapper}
    header = "{#- mm_st reranker " + json.dumps(meta, sort_keys=True) + " -#}\n"
    return header + "".join(f"{{%- set {k} = {v} -%}}\n" for k, v in constants.items()) + _JINJA


def render_rerank_prompt(template: str, query: Any, document: Any, prompt: str | None = None) -> str:
    """The literal text one (query, document) pair gets from a reranker's chat template.

    ``query`` / ``document``: a text, ``None`` (absent), or a ``(num_images, text)`` tuple.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    def content(side: Any) -> list[dict]:
        images, text = side if isinstance(side, tuple) else (0, side)
        return [{"type": "image"}] * images + ([{"type": "text", "text": text}] if text else [])

    system = [{"role": "system", "content": [{"type": "text", "text": prompt}]}] if prompt else []
    messages = [*system, {"role": "query", "content": content(query)}, {"role": "document", "content": content(document)}]
    out, _ = render_jinja_template(conversations=[messages], chat_template=template)
    return out[0]


def answer_token_ids(tokenizer: Any, template: str, answers: Sequence[str]) -> list[int]:
    """The token id of each answer word as it would follow the rendered prompt (see module docstring).

    Raises ValueError when an answer is not exactly one token there.
    """
    prefix = render_rerank_prompt(template, "q", "d")
    base = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = []
    for word in answers:
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"Answer words must be non-empty strings, got {word!r}.")
        answer = word if not prefix or prefix[-1].isspace() else " " + word
        full = tokenizer(prefix + answer, add_special_tokens=False)["input_ids"]
        extra = full[len(base):]
        if full[: len(base)] != base or len(extra) != 1:
            tokens = tokenizer.convert_ids_to_tokens(tokenizer(answer, add_special_tokens=False)["input_ids"])
            raise ValueError(
                f"The answer {answer!r} is not one token after this reranker's prompt (it tokenizes as {tokens}); "
                "LogitScore reads one token per answer. Pass answers=(true_word, false_word) that are single tokens "
                "for this tokenizer."
            )
        ids.append(extra[0])
    if ids[0] == ids[1]:
        raise ValueError(f"The answers {list(answers)} map to the same token id {ids[0]}.")
    return ids


def reranker_metadata(model: Any) -> dict[str, Any] | None:
    """``{"prompt", "family", "wrapper", "default_prompt"}`` of an mm_st reranker (from its chat template), else None."""
    from mm_st.metadata import model_template

    template = model_template(model)
    match = _HEADER.search(template[:300]) if isinstance(template, str) else None
    if match is None:
        return None
    meta = json.loads(match[1])
    default = _DEFAULT_PROMPT.search(template)
    meta["default_prompt"] = json.loads(default[1]) if default else None
    return meta


class MultimodalCrossEncoder(CrossEncoder):
    """A sentence-transformers ``CrossEncoder`` that takes mm_st inputs in its pairs and names bad ones.

    Each side of a pair may be anything :func:`mm_st.inputs.normalize_input` accepts (``None`` fields,
    ``pathlib.Path`` images, ...). Errors name the pair's index and side: a pair that is not two items,
    an image given to a text-only backbone, an empty prompt, images on both sides with a prompt that
    places the document first. Saved, it is a plain ``CrossEncoder``.

    With ``group_modalities = True`` (the default) a ``predict`` call whose pairs differ in which side
    holds an image runs one ``predict`` per kind of pair (scores in the caller's order), so text pairs
    are not padded to image pairs and Mllama, whose processor cannot batch pairs with and without an
    image, takes such calls.
    """

    group_modalities: bool = True

    def _get_name(self) -> str:
        return "CrossEncoder"

    def predict(self, inputs: Any, prompt_name: str | None = None, prompt: str | None = None, **kwargs) -> Any:
        """As ``CrossEncoder.predict``, with the checks above."""
        if prompt is not None:
            check_prompt(prompt if QUERY in prompt or DOCUMENT in prompt else DEFAULT_LAYOUT.replace(QUESTION, prompt))
        singular = self.is_singular_input(inputs)
        pairs = [inputs] if singular else list(inputs)
        effective = self._resolve_prompt(prompt, prompt_name) or (reranker_metadata(self) or {}).get("default_prompt")
        checked = [self._check_pair(i, pair, effective) for i, pair in enumerate(pairs)]
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, (query, document) in enumerate(checked):
            groups.setdefault((has_image(query), has_image(document)), []).append(i)
        if not self.group_modalities or len(groups) < 2:
            return super().predict(checked[0] if singular else checked, prompt_name=prompt_name, prompt=prompt, **kwargs)
        to_tensor, to_numpy = kwargs.pop("convert_to_tensor", False), kwargs.pop("convert_to_numpy", True)
        scores: list[Any] = [None] * len(checked)
        for rows in groups.values():
            out = super().predict([checked[i] for i in rows], prompt_name=prompt_name, prompt=prompt,
                                  convert_to_tensor=True, **kwargs)
            for i, value in zip(rows, out):
                scores[i] = value
        stacked = torch.stack(scores)
        if to_tensor:
            return stacked
        return stacked.float().cpu().numpy() if to_numpy else list(stacked)

    def _check_pair(self, index: int, pair: Any, prompt: str | None) -> list[Any]:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"Pair {index} must be a (query, document) pair of two inputs, got {pair!r:.80}.")
        supports_image = self.supports("image")
        query, document = (normalize_input(item, f"{index} ({side})", supports_image)
                           for side, item in zip(("query", "document"), pair))
        if prompt and has_image(query) and has_image(document):
            full = prompt if QUERY in prompt or DOCUMENT in prompt else DEFAULT_LAYOUT
            if full.find(DOCUMENT) < full.find(QUERY):
                raise ValueError(f"Pair {index}: {IMAGE_ORDER_ERROR}")
        return [query, document]


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = tokenizer.bos_token_id
    return bos_id is not None and tokenizer("a")["input_ids"][:1] == [bos_id]


def build_reranker(
    model_name_or_path: str,
    prompt: str | RerankPrompt = "mmembed_daily_life",
    *,
    score: str = "probability",
    answers: Sequence[str] = ("True", "False"),
    family: str | None = None,
    wrapper: str | None = None,
    max_length: int | None = None,
    dtype: Any = None,
    attn_implementation: str | None = None,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> MultimodalCrossEncoder:
    """A zero-shot True/False reranker (a sentence-transformers ``CrossEncoder``) from a (multimodal) LLM.

    Args:
        model_name_or_path: Hub id or local directory of a multimodal LLM of a :mod:`mm_st.templates`
            family, or of a text-only causal LM.
        prompt: a key of :data:`RERANK_PROMPTS`, a :class:`RerankPrompt`, a question, or a full layout
            with ``<query>`` and ``<document>``. It is the default; every registry prompt is also saved
            as an ST prompt (``predict(..., prompt_name=...)``).
        score: ``"probability"`` (P(True) over the two answer tokens) or ``"margin"`` (logit difference).
        answers: the (true, false) answer words; each must be one token after the prompt.
        family: backbone family; detected from the config's ``model_type`` when None.
        wrapper: chat turn (a :data:`mm_st.templates.WRAPPERS` name); detected from the tokenizer when None.
        max_length, dtype, attn_implementation, device, model_kwargs, processor_kwargs, trust_remote_code:
            as in :func:`mm_st.build_model` (``trust_remote_code`` is off by default).
    """
    from transformers import AutoConfig, AutoProcessor

    rerank_prompt = resolve_prompt(prompt)
    if score not in SCORES:
        raise ValueError(f"Unknown score {score!r}. Known: {', '.join(SCORES)}.")
    if isinstance(answers, str) or len(answers) != 2:
        raise ValueError(f"answers must be two words (true, false), got {answers!r}.")
    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    fam = templates.get_family(family) if family else templates.family_for_model_type(config.model_type)

    model_kwargs, processor_kwargs = loading_kwargs(model_kwargs, processor_kwargs, dtype=dtype,
                                                    attn_implementation=attn_implementation,
                                                    trust_remote_code=trust_remote_code, max_length=max_length)

    processor = AutoProcessor.from_pretrained(model_name_or_path, **processor_kwargs)
    tokenizer = getattr(processor, "tokenizer", processor)
    if wrapper is None:
        own = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        detected = templates.detect_wrapper(tokenizer.get_vocab(), own if isinstance(own, str) else None)
        wrapper = detected.name if detected else (fam.wrapper or "raw")
    bos = tokenizer.bos_token if tokenizer is processor and _adds_bos(tokenizer) else ""
    chat_template = render_reranker_template(rerank_prompt, fam.name, wrapper, bos=bos)
    true_id, false_id = answer_token_ids(tokenizer, chat_template, answers)

    transformer = Transformer(
        model_name_or_path,
        transformer_task="any-to-any" if fam.image_placeholder else "text-generation",
        model_kwargs=model_kwargs,
        processor_kwargs={**processor_kwargs, "chat_template": chat_template},
        config_kwargs={"trust_remote_code": trust_remote_code} if trust_remote_code else None,
    )
    tokenizer = getattr(transformer.processor, "tokenizer", transformer.processor)
    if tokenizer is not transformer.processor:
        tokenizer.chat_template = chat_template  # saved beside the processor's: keep the two files the same
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    prompts = {name: p.text for name, p in RERANK_PROMPTS.items()}
    prompts.setdefault(rerank_prompt.name, rerank_prompt.text)
    model = MultimodalCrossEncoder(
        modules=[transformer, LogitScore(true_token_id=true_id, false_token_id=false_id)],
        device=device,
        prompts=prompts,
        activation_fn=SCORES[score](),
    )
    model.model_card_data.model_name = f"CrossEncoder: zero-shot True/False reranker on a {fam.name} backbone (mm_st)"
    return model


def load_reranker(path: str, **kwargs) -> MultimodalCrossEncoder:
    """Load a saved reranker with mm_st's input checks (a plain ``CrossEncoder(path)`` loads it too)."""
    return MultimodalCrossEncoder(path, **kwargs)


# ----------------------------------------------------------------------------------------------
# Retrieve, then rerank
# ----------------------------------------------------------------------------------------------


def retrieve(
    embedder: Any,
    queries: Sequence[Any],
    corpus: Sequence[Any],
    k: int = 10,
    *,
    query_prompt: str | None = None,
    corpus_embeddings: Any = None,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> list[list[dict[str, Any]]]:
    """Each query's top ``k`` corpus entries by the embedding model: ``[{"corpus_id", "score"}, ...]``, best first.

    ``corpus_embeddings`` (from ``embedder.encode_document(corpus)``) skips encoding the corpus.
    """
    _check_k(k, queries, corpus)
    kwargs = dict(batch_size=batch_size, convert_to_tensor=True, show_progress_bar=show_progress_bar)
    query_embeddings = embedder.encode_query(list(queries), prompt=query_prompt, **kwargs)
    if corpus_embeddings is None:
        corpus_embeddings = embedder.encode_document(list(corpus), **kwargs)
    elif len(corpus_embeddings) != len(corpus):
        raise ValueError(f"corpus_embeddings has {len(corpus_embeddings)} rows for a corpus of {len(corpus)} documents.")
    scores = embedder.similarity(query_embeddings, torch.as_tensor(corpus_embeddings).to(query_embeddings.device))
    top = torch.topk(scores, k, dim=1)
    return [
        [{"corpus_id": int(i), "score": float(s)} for s, i in zip(values, indices)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist())
    ]


def rerank(
    reranker: CrossEncoder,
    queries: Sequence[Any],
    corpus: Sequence[Any],
    hits: Sequence[Sequence[dict[str, Any]]],
    *,
    prompt: str | None = None,
    prompt_name: str | None = None,
    batch_size: int = 8,
    show_progress_bar: bool | None = None,
) -> list[list[dict[str, Any]]]:
    """Rerank each query's ``hits`` (from :func:`retrieve`) with the reranker; best first.

    Every (query, candidate) pair of every query goes into one ``predict`` call, ``batch_size`` pairs
    per forward. Each hit keeps its first-stage ``score`` as ``retrieval_score`` (and ``retrieval_rank``,
    1-based) and gets the reranker's ``score``; ties keep the retrieval order.
    """
    if len(hits) != len(queries):
        raise ValueError(f"hits has {len(hits)} lists for {len(queries)} queries.")
    pairs, owners = [], []
    for q, query_hits in enumerate(hits):
        for rank, hit in enumerate(query_hits):
            corpus_id = hit["corpus_id"]
            if not 0 <= corpus_id < len(corpus):
                raise IndexError(f"Query {q}: hit {rank} names corpus_id {corpus_id}, outside the corpus of {len(corpus)}.")
            pairs.append([queries[q], corpus[corpus_id]])
            owners.append((q, rank))
    scores = reranker.predict(
        pairs, prompt=prompt, prompt_name=prompt_name, batch_size=batch_size, show_progress_bar=show_progress_bar,
        convert_to_numpy=True,
    ) if pairs else []
    out: list[list[dict[str, Any]]] = [[] for _ in hits]
    for (q, rank), score in zip(owners, scores):
        hit = hits[q][rank]
        out[q].append({"corpus_id": hit["corpus_id"], "score": float(score), "retrieval_score": hit["score"],
                       "retrieval_rank": rank + 1})
    return [sorted(items, key=lambda h: (-h["score"], h["retrieval_rank"])) for items in out]


def retrieve_and_rerank(
    embedder: Any,
    reranker: CrossEncoder,
    queries: Sequence[Any],
    corpus: Sequence[Any],
    k: int = 10,
    *,
    query_prompt: str | None = None,
    rerank_prompt: str | None = None,
    rerank_prompt_name: str | None = None,
    corpus_embeddings: Any = None,
    batch_size: int = 32,
    rerank_batch_size: int = 8,
    show_progress_bar: bool | None = None,
) -> list[list[dict[str, Any]]]:
    """Retrieve each query's top ``k`` with ``embedder`` (a SentenceTransformer), rerank them with ``reranker``.

    Returns per query ``k`` dicts ``{"corpus_id", "score", "retrieval_score", "retrieval_rank"}``, best
    reranker score first. ``k`` larger than the corpus is an error (naming both sizes).
    """
    hits = retrieve(embedder, queries, corpus, k, query_prompt=query_prompt, corpus_embeddings=corpus_embeddings,
                    batch_size=batch_size, show_progress_bar=show_progress_bar)
    return rerank(reranker, queries, corpus, hits, prompt=rerank_prompt, prompt_name=rerank_prompt_name,
                  batch_size=rerank_batch_size, show_progress_bar=show_progress_bar)


def _check_k(k: int, queries: Sequence[Any], corpus: Sequence[Any]) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer (the number of candidates to rerank), got {k!r}.")
    if len(corpus) == 0:
        raise ValueError("The corpus is empty: there is nothing to retrieve.")
    if k > len(corpus):
        raise ValueError(f"k={k} is larger than the candidate pool ({len(corpus)} documents in the corpus); use k <= {len(corpus)}.")
    if len(queries) == 0:
        raise ValueError("No queries given.")
