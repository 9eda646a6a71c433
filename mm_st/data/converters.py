"""Converters: the training sets of E5-V, VLM2Vec/mmE5 and MM-Embed as sentence-transformers datasets.

Every converter returns ``datasets`` objects whose columns are, in order, ``anchor``, ``positive`` and
``negative_1 .. negative_k``: what the sentence-transformers trainer and mm_st's losses take (columns
after the positive are hard negatives). Multimodal columns are ``{"text", "image"}`` structs
(:mod:`mm_st.data.columns`): an absent modality is ``None``; images are stored as paths and decoded
lazily by ``datasets.Image``.

============================  =====================================================  =================
converter                     layout                                                 returns
============================  =====================================================  =================
:func:`load_mmeb_train`       ``TIGER-Lab/MMEB-train`` (per-dataset configs)          ``DatasetDict``
:func:`load_mme5_synthetic`   ``intfloat/mmE5-synthetic`` (same columns)              ``DatasetDict``
:func:`load_mbeir`            M-BEIR query jsonl + candidate pool jsonl + images      ``DatasetDict``
:func:`load_nli`              SimCSE NLI csv / ``sentence-transformers/all-nli``      ``Dataset``
============================  =====================================================  =================

A ``DatasetDict`` has one dataset per source dataset / task, so the trainer's multi-dataset
sampler can draw each batch from one of them (VLM2Vec v2 style), and per-dataset ``prompts``
apply. Each converter takes a Hub id (real users) or a local directory with the same layout
(:func:`mm_st.io.is_local` tells them apart).

Images: paths are resolved inside ``image_root`` (:func:`mm_st.io.resolve_inside`: a path escaping the
root, also through a symbolic link, is an error). Missing or
unreadable images raise an error that counts them and lists the first few (dataset, row, column,
path); ``on_missing="skip"`` drops those rows instead and logs how many.

Hard negatives: ``num_negatives=k`` gives ``k`` negative columns; a row with fewer (but at least
one) negatives repeats its last one (as mmE5's loader does); rows with none are dropped and counted;
a dataset in which no row has a negative gets no negative columns (logged). ``num_negatives=None``
takes the largest count present; 0 gives no negative columns. ``neg_text`` / ``neg_image_path`` may
be a list of strings or, as mmE5 writes them, the Python literal of one: a string is read as a list
only when it is a list literal of strings (``"['a cat', 'a dog']"`` gives two negatives); any other
string, e.g. ``"[1, 2, 3]"``, is one text as written. Nothing is ever executed.

Bad input is an error that names the file (or config) and row: a malformed or non-UTF-8 line, a row
that is not an object, a text or path field that is not a string (``pos_text: 123``), a NUL byte in
a path, an NLI row without one of its three texts, an M-BEIR row without ``qid`` / ``did``, or a
``pos_cand_list`` that is not a list of ids.

Empty negative texts (VLM2Vec layout): ``empty_negative_text="fill"`` (default) does what mmE5's
loader does (haon-chen/mmE5 ``src/dataset.py``): an empty ``neg_text`` entry takes the positive's
text when all of the row's negative texts are identical, else a random non-empty negative text of
the row (seeded by ``seed`` and the row index); ``"keep"`` leaves it empty (an image-only negative).

Each format is one module (a new format, e.g. a video one, is one new file): :mod:`mm_st.data.mmeb_train`,
:mod:`mm_st.data.mme5_synthetic`, :mod:`mm_st.data.mbeir_train`, :mod:`mm_st.data.nli`, :mod:`mm_st.data.text_pairs`;
they share the row reader (:mod:`mm_st.data.rows`), the image checker (:mod:`mm_st.data.images`) and the columns
(:mod:`mm_st.data.columns`). This module re-exports their names.

Example:
    >>> from mm_st.data.converters import load_nli
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp(), "nli.csv")
    >>> _ = path.write_text("sent0,sent1,hard_neg\\nA man sleeps.,A person rests.,A man runs.\\n")
    >>> load_nli(path)[0]
    {'anchor': 'A man sleeps.', 'positive': 'A person rests.', 'negative': 'A man runs.'}
"""

from __future__ import annotations

from mm_st.data.columns import INPUT_FEATURE, INSTRUCTED_INPUT_FEATURE, as_list, build_dataset, fill_negatives, make_input, text_field  # noqa: F401
from mm_st.data.images import ON_MISSING, ImageChecker, check_on_missing, image_roots, report_missing  # noqa: F401
from mm_st.data.mbeir import (  # noqa: F401  (re-exported: the reader moved to mm_st.data.mbeir)
    MBEIR_DATASETS, MBEIR_MODALITY_NAMES, MBEIR_REPO, file_list, mbeir_instructions, mbeir_modality, mbeir_pool_files,
    mbeir_query_files, mbeir_root, mbeir_task_name, pool_rows, query_rows, read_instructions,
)
from mm_st.data.mbeir_train import load_mbeir, mbeir_candidate_pools  # noqa: F401
from mm_st.data.mme5_synthetic import MME5_SYNTHETIC_CONFIGS, MME5_SYNTHETIC_REPO, load_mme5_synthetic  # noqa: F401
from mm_st.data.mmeb_train import (  # noqa: F401
    EMPTY_NEGATIVE_TEXT, IMAGE_PLACEHOLDERS, MMEB_TRAIN_CONFIGS, MMEB_TRAIN_REPO, VLM2VEC_COLUMNS, load_mmeb_train,
    load_vlm2vec_layout, strip_placeholder,
)
from mm_st.data.nli import NLI_COLUMN_SETS, load_nli  # noqa: F401
from mm_st.data.rows import PROGRESS_MIN_ROWS, Spans, config_rows, quiet_progress, read_rows, row_origin  # noqa: F401
from mm_st.data.text_pairs import TEXT_PAIR_COLUMNS, load_text_pairs  # noqa: F401
