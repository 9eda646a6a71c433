"""NV-Embed's latent-attention pooling and MM-Embed's instruction mask, as one sentence-transformers module.

This file travels with every saved model that uses it (``latent_attention.py`` at the folder's root;
``modules.json`` names ``latent_attention.LatentAttentionPooling``), so such a model loads with
``SentenceTransformer(path, trust_remote_code=True)`` where mm_st is not installed. It therefore imports
only torch and sentence-transformers, never mm_st.

Sources (read for facts, the code here is written anew):

- Latent attention: NV-Embed (arXiv 2405.17428, section 3.2) and ``modeling_nvembed.py`` of nvidia/NV-Embed-v1/v2
  (``LatentAttentionModel`` with ``PreNorm``, ``Attention``, ``FeedForward``/``GEGLU``): the token hidden states
  are the queries of a multi-head cross-attention whose keys and values are a trainable latent array; pre-norm
  (one LayerNorm on the tokens, one on the latents), residual added to the tokens; then a pre-norm GEGLU MLP
  (``Linear(d, 2*4*d)`` -> ``x * gelu(gate)`` -> ``Linear(4*d, d)``) with a residual; then the mean over the
  tokens the pooling mask keeps. Projections have no bias, the latents start as ``torch.randn``. The paper
  describes the MLP as "two linear transformations with a GELU activation in between"; the code's gated GELU is
  what is built here. Sizes: 512 latents and 8 heads (paper and code); the per-head width equals the hidden size
  (4096) in NV-Embed-v2's config. That config file was not visible in this session; the value is inferred from
  the published parameter count (Mistral-7B 7.11B without its LM head + latent attention 0.74B at head width
  4096 = NV-Embed-v2's 7.85B) and is the default here (``head_dim=None``).
- Instruction mask: nvidia/MM-Embed ``modeling_nvmmembed.py`` ``calculate_instruction_length(tokenizer, prompts,
  f'\\n{query_prefix}')`` with ``query_prefix = 'Query: '``: the instruction length is the token count of the
  prompt text before ``"\\nQuery: "`` (with BOS), and ``create_pool_mask`` zeroes those first positions of the
  attention mask. Tokens from the ``"\\n"`` of the marker on are pooled; prompts without the marker (queries
  without an instruction, documents) are pooled whole. ``mask_marker=True`` also masks ``"\\nQuery:"`` itself
  (NV-Embed's text model: ``len(tokenizer.tokenize("Instruct: ...\\nQuery: "))`` positions from the start).

Locating the marker. Upstream counts positions from the start of a right-padded batch; here the marker is found
in each row's ``input_ids``, so left and right padding give the same mask. Its word (``"Query:"``) is matched by
its token ids as the backbone's tokenizer writes it inside a prompt, and the token before it must end in a
newline. The ids are found once (:func:`resolve_marker`): the tokenizer encodes the marker between several
instruction endings (``"."``, ``"?"``, ``")"``, digits, ...) and following texts (a word, a space, a digit,
nothing); the word's tokens must be the same, whole tokens in every case, and the newline may be a token of its
own (SentencePiece, GPT-2-style BPE) or merged with the instruction's last character (Llama-3 / Qwen BPE writes
``".\\n"``). A tokenizer that merges the word with its neighbours is refused with an error that shows the
tokens, rather than masking the wrong span. Newline-ending tokens are found by decoding the vocabulary once.

Bidirectional attention (NV-Embed removes the causal mask) is transformers' own switch: ``is_causal = False`` on
the language model's config (:func:`use_bidirectional_attention`), which ``create_causal_mask`` and the attention
functions read. It is saved in ``config.json``; a model saved as a PEFT adapter loads its base model's config
instead, so this module (``bidirectional=True``) sets the switch again when the model is loaded.

Example:
    >>> import torch
    >>> pooling = LatentAttentionPooling(16, num_latents=4, num_heads=2, head_dim=8)
    >>> features = {"token_embeddings": torch.randn(2, 5, 16), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    >>> pooling(features)["sentence_embedding"].shape
    torch.Size([2, 16])
"""

from __future__ import annotations

import inspect
import os
import shutil
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.modules import Module
from torch import nn

# Instruction endings and following texts the marker is tokenized between (see resolve_marker).
_LEFT_CONTEXTS = (
    "Instruct: find it", "Instruct: Find it.", "Instruct: why?", "Instruct: (it)", 'Instruct: "it"', "Instruct: it:",
    "Instruct: 12", "Instruct: it!",
)
_RIGHT_CONTEXTS = ("word", "A word", "1 word", " word", "(word)", "")


def use_bidirectional_attention(model: Any) -> None:
    """Switch a transformers model's language model to bidirectional attention (``is_causal = False``).

    transformers' mask builders (``masking_utils.create_causal_mask``) return a bidirectional padding mask
    when the config says ``is_causal=False``, and ``merge_with_config_defaults`` passes ``is_causal=False`` on
    to the attention functions (SDPA, eager, flash). The flag is saved in the model's ``config.json``.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "get_text_config"):
        raise TypeError(f"Expected a transformers model with a config, got {type(model).__name__}.")
    config.get_text_config().is_causal = False


def _fast_tokenizer(tokenizer: Any) -> Any:
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Instruction masking needs a fast tokenizer (character offsets), got {type(tokenizer).__name__}."
        )
    return tokenizer


def newline_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vocabulary's tokens whose text ends with a newline."""
    tokenizer = _fast_tokenizer(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
    return [i for i, text in enumerate(texts) if text.endswith("\n")]


def resolve_marker(tokenizer: Any, marker: str = "\nQuery: ") -> tuple[list[int], list[int]]:
    """``(marker_token_ids, newline_token_ids)``: how ``tokenizer`` writes the marker's word inside a prompt.

    ``marker`` must start with a newline and hold a word (MM-Embed: ``"\\nQuery: "``). Raises ValueError,
    showing the tokens, when the word's token ids change with the neighbouring text or the token before it
    does not end in a newline.

    Example:
        >>> from transformers import AutoTokenizer
        >>> from mm_st.testing import tiny_model
        >>> tokenizer = AutoTokenizer.from_pretrained(tiny_model("qwen2_vl"))
        >>> ids, newlines = resolve_marker(tokenizer)
        >>> tokenizer.decode(ids), len(newlines) > 0
        ('Query:', True)
    """
    word = marker.strip()
    if not marker.startswith("\n") or not word or "\n" in word:
        raise ValueError(f"The instruction marker must be a newline followed by a word, got {marker!r}.")
    tokenizer = _fast_tokenizer(tokenizer)
    newlines = newline_token_ids(tokenizer)
    found: list[int] | None = None
    for left in _LEFT_CONTEXTS:
        for right in _RIGHT_CONTEXTS:
            text = left + marker + right
            start = len(left) + marker.index(word)
            end = start + len(word)
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
            inside = [i for i, (a, b) in enumerate(offsets) if a >= start and b <= end and b > a]
            tokens = tokenizer.convert_ids_to_tokens(ids)
            whole = inside and offsets[inside[0]][0] == start and offsets[inside[-1]][1] == end
            if not whole or inside != list(range(inside[0], inside[-1] + 1)):
                raise ValueError(
                    f"The tokenizer merges the marker word {word!r} with neighbouring text in {text!r} (tokens "
                    f"{tokens}); the instruction mask cannot find it by token ids."
                )
            if inside[0] == 0 or ids[inside[0] - 1] not in newlines:
                raise ValueError(
                    f"In {text!r} the token before {word!r} does not end in a newline (tokens {tokens}); the "
                    "instruction mask cannot find the marker by token ids."
                )
            word_ids = [ids[i] for i in inside]
            if found is not None and word_ids != found:
                raise ValueError(
                    f"The tokenizer writes the marker word {word!r} as {word_ids} in {text!r} but as {found} "
                    "elsewhere; the instruction mask cannot find it by token ids."
                )
            found = word_ids
    return found, newlines


def instruction_pool_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    marker_token_ids: list[int],
    newline_token_ids: list[int],
    mask_marker: bool = False,
) -> torch.Tensor:
    """``attention_mask`` with each row's instruction (everything before the marker's newline token) set to 0.

    The marker is the first place in a row where ``marker_token_ids`` follow a token in ``newline_token_ids``;
    rows without it are returned unchanged. With ``mask_marker`` the marker's word is masked too.

    Example:
        >>> ids = torch.tensor([[0, 0, 5, 6, 9, 7, 8, 3], [0, 5, 9, 7, 8, 3, 4, 2]])
        >>> mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
        >>> instruction_pool_mask(ids, mask, [7, 8], [9]).tolist()
        [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 1]]
        >>> instruction_pool_mask(ids, mask, [7, 8], [9], mask_marker=True).tolist()
        [[0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1, 1, 1]]
    """
    width = len(marker_token_ids)
    length = input_ids.shape[1]
    if width == 0 or length <= width:
        return attention_mask
    marker = torch.as_tensor(marker_token_ids, device=input_ids.device)
    newlines = torch.as_tensor(newline_token_ids, device=input_ids.device, dtype=input_ids.dtype)
    real = attention_mask.bool()
    # hit[:, p]: the marker word starts at position p + 1 and the token at p ends in a newline
    word_at = (input_ids[:, 1:].unfold(1, width, 1) == marker).all(-1) & real[:, 1 : length - width + 1]
    newline_at = torch.isin(input_ids[:, : length - width], newlines) & real[:, : length - width]
    hit = word_at & newline_at
    found = hit.any(dim=1)
    first = hit.int().argmax(dim=1)  # the first hit (argmax returns the first maximum)
    boundary = first + 1 + width if mask_marker else first
    positions = torch.arange(length, device=input_ids.device)
    instruction = found[:, None] & (positions[None, :] < boundary[:, None])
    return attention_mask.masked_fill(instruction, 0)


class LatentAttentionPooling(Module):
    """NV-Embed's latent-attention layer and MM-Embed's instruction-masked mean pooling (see the module doc).

    Reads ``token_embeddings``, ``attention_mask`` and ``input_ids``; writes ``sentence_embedding`` (width
    ``embedding_dimension``). Follow it with ``Normalize``.

    Args:
        embedding_dimension: hidden size of the language model (the token embeddings' width).
        num_latents: rows of the trainable latent array (NV-Embed: 512).
        num_heads: attention heads (NV-Embed: 8).
        head_dim: width of each head; None: ``embedding_dimension`` (NV-Embed-v2).
        ff_mult: the MLP's inner width is ``ff_mult * embedding_dimension`` (NV-Embed: 4).
        instruction_marker: text that ends an instruction (MM-Embed: ``"\\nQuery: "``); None pools every token.
        mask_marker: also exclude the marker's word from the pool (NV-Embed's text model); default False
            (MM-Embed's ``calculate_instruction_length``).
        marker_token_ids, newline_token_ids: the marker as token ids (:func:`resolve_marker`); filled from the
            model's tokenizer when the module joins a model, and saved with the config.
        bidirectional: the language model was built with bidirectional attention; re-applied when the model is
            loaded (see the module doc).
    """

    config_keys: list[str] = [
        "embedding_dimension",
        "num_latents",
        "num_heads",
        "head_dim",
        "ff_mult",
        "instruction_marker",
        "mask_marker",
        "marker_token_ids",
        "newline_token_ids",
        "bidirectional",
    ]
    ships_code = True  # the saved folder carries this file (mm_st's save and ``save`` below)

    def __init__(
        self,
        embedding_dimension: int,
        num_latents: int = 512,
        num_heads: int = 8,
        head_dim: int | None = None,
        ff_mult: int = 4,
        instruction_marker: str | None = None,
        mask_marker: bool = False,
        marker_token_ids: list[int] | None = None,
        newline_token_ids: list[int] | None = None,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        sizes = {"embedding_dimension": embedding_dimension, "num_latents": num_latents, "num_heads": num_heads,
                 "ff_mult": ff_mult, "head_dim": 1 if head_dim is None else head_dim}
        for name, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LatentAttentionPooling: {name} must be a positive integer, got {value!r}.")
        self.embedding_dimension = embedding_dimension
        self.num_latents = num_latents
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.ff_mult = ff_mult
        self.instruction_marker = instruction_marker
        self.mask_marker = mask_marker
        self.marker_token_ids = marker_token_ids
        self.newline_token_ids = newline_token_ids
        self.bidirectional = bidirectional

        d, inner = embedding_dimension, num_heads * (head_dim or embedding_dimension)
        self.latents = nn.Parameter(torch.randn(num_latents, d))
        self.token_norm = nn.LayerNorm(d)
        self.latent_norm = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, inner, bias=False)
        self.to_kv = nn.Linear(d, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, d, bias=False)
        self.ff_norm = nn.LayerNorm(d)
        self.ff_in = nn.Linear(d, 2 * ff_mult * d)
        self.ff_out = nn.Linear(ff_mult * d, d)

    def get_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def __repr__(self) -> str:
        config = self.get_config_dict()
        if config["newline_token_ids"] is not None:  # can be long for large vocabularies
            config["newline_token_ids"] = f"<{len(config['newline_token_ids'])} ids>"
        return f"{type(self).__name__}({config})"

    def attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token latent attention + MLP (both with residuals), ``(batch, length, d)`` -> same shape."""
        batch, length, _ = tokens.shape
        heads = self.num_heads
        q = self.to_q(self.token_norm(tokens)).view(batch, length, heads, -1).transpose(1, 2)
        k, v = self.to_kv(self.latent_norm(self.latents)).view(self.num_latents, 2, heads, -1).unbind(1)
        k, v = (t.transpose(0, 1).unsqueeze(0).expand(batch, -1, -1, -1) for t in (k, v))
        attended = F.scaled_dot_product_attention(q, k, v)  # no mask: every latent is visible to every token
        tokens = tokens + self.to_out(attended.transpose(1, 2).reshape(batch, length, -1))
        value, gate = self.ff_in(self.ff_norm(tokens)).chunk(2, dim=-1)
        return tokens + self.ff_out(value * F.gelu(gate))

    def pool_mask(self, features: dict[str, Any]) -> torch.Tensor:
        """The tokens that are averaged: the attention mask without each query's instruction."""
        mask = features["attention_mask"]
        if not self.instruction_marker:
            return mask
        if self.marker_token_ids is None or self.newline_token_ids is None:
            raise ValueError(
                "LatentAttentionPooling has an instruction marker but no token ids for it: add the module to a "
                "SentenceTransformer (its tokenizer fills them in) or pass marker_token_ids/newline_token_ids "
                "from resolve_marker(tokenizer)."
            )
        if "input_ids" not in features:
            raise ValueError("LatentAttentionPooling needs 'input_ids' in the features to find the instruction.")
        return instruction_pool_mask(
            features["input_ids"], mask, self.marker_token_ids, self.newline_token_ids, self.mask_marker
        )

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        tokens = features["token_embeddings"].to(self.latents.dtype)
        pool = self.pool_mask(features).to(tokens.dtype)
        counts = pool.sum(dim=1, keepdim=True)
        if bool((counts == 0).any()):
            empty = (counts[:, 0] == 0).nonzero().flatten().tolist()
            raise ValueError(f"LatentAttentionPooling: rows {empty} have no token left to pool.")
        features["sentence_embedding"] = (self.attend(tokens) * pool.unsqueeze(-1)).sum(dim=1) / counts
        return features

    def on_model_ready(self, model: Any) -> None:
        """Find the marker's token ids with the model's tokenizer; re-apply bidirectional attention."""
        first = model[0] if len(model) else None
        if self.instruction_marker and (self.marker_token_ids is None or self.newline_token_ids is None):
            tokenizer = getattr(first, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("LatentAttentionPooling needs the model's first module to have a tokenizer.")
            self.marker_token_ids, self.newline_token_ids = resolve_marker(tokenizer, self.instruction_marker)
        if self.bidirectional:
            use_bidirectional_attention(getattr(first, "model", None))

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Config, weights (safetensors) and this code file, also beside the model's root files."""
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)
        code = inspect.getfile(type(self))
        root = os.path.dirname(os.path.normpath(output_path))
        # sentence-transformers loads a module's code from the model's root folder (its modules.json type
        # is "latent_attention.LatentAttentionPooling"); it writes config_sentence_transformers.json there first.
        at_root = os.path.isfile(os.path.join(root, "config_sentence_transformers.json"))
        for target in [output_path] + ([root] if at_root else []):
            destination = os.path.join(target, os.path.basename(code))
            if os.path.abspath(destination) != os.path.abspath(code):
                shutil.copyfile(code, destination)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs,
    ) -> LatentAttentionPooling:
        """The saved config and weights (sentence-transformers' loading arguments; the rest are ignored)."""
        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        config = cls.load_config(model_name_or_path, **hub)
        module = cls(**config)
        return cls.load_torch_weights(model_name_or_path, model=module, **hub)
