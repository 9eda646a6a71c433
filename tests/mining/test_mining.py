"""mine_hard_negatives: exact negatives on hand-built geometry, exclusion guarantees, chunked search vs
brute force, resumable cache, a real tiny model end to end (feeding MultimodalInfoNCELoss), bad input."""

import json
import logging
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from mm_st import build_model
from mm_st.data import load_emoji
from mm_st.inputs import content_key, normalize_input
from mm_st.losses import MultimodalInfoNCELoss
from mm_st.mining import mine_hard_negatives
from mm_st.testing import tiny_model


def ring(degrees):
    """Unit vectors in 2-D at these angles; a query at 0 degrees scores cos(angle) against each."""
    radians = np.radians(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


QUERY = ring([0])


def mine(**kwargs):
    kwargs.setdefault("show_progress_bar", False)
    return mine_hard_negatives(return_report=True, **kwargs)


def square(color):
    return Image.new("RGB", (8, 8), color)


# --------------------------------------------------------------------------------------------------
# window / single rank, with items that must not count as ranks
# --------------------------------------------------------------------------------------------------

# index -> angle; positive is index 3 (6 degrees). Ranked without it: 1, 4, 6, 0, 9, 7, 5, 8, 2.
WINDOW_ANGLES = [12, 0, 27, 6, 3, 21, 9, 18, 24, 15]
WINDOW_CORPUS = [f"doc{i}" for i in range(10)]


def test_window_exact_negatives_and_struct_columns():
    ds, report = mine(queries=["query"], corpus=WINDOW_CORPUS, positives=[3], query_embeddings=QUERY,
                      corpus_embeddings=ring(WINDOW_ANGLES), strategy="window", ranks=(3, 5), num_negatives=3)
    assert report.negative_index == [[6, 0, 9]]
    assert report.negative_rank == [[3, 4, 5]]
    assert report.negative_score[0] == pytest.approx(np.cos(np.radians([9, 12, 15])).tolist(), abs=1e-6)
    assert report.positive_score == pytest.approx([np.cos(np.radians(6))], abs=1e-6)
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert ds[0] == {"anchor": {"text": "query", "image": None}, "positive": {"text": "doc3", "image": None},
                     "negative_1": {"text": "doc6", "image": None}, "negative_2": {"text": "doc0", "image": None},
                     "negative_3": {"text": "doc9", "image": None}}
    assert report.negative_type == [["window"] * 3]


def test_window_fallback_takes_the_nearest_ranks_above_a_window_the_pool_cannot_fill():
    # 9 candidates besides the positive: rank 70 does not exist; the fallback takes rank 9 (doc2), then 8.
    ds, report = mine(queries=["query"], corpus=WINDOW_CORPUS, positives=[3], query_embeddings=QUERY,
                      corpus_embeddings=ring(WINDOW_ANGLES), strategy="window", ranks=70, fallback="nearest")
    assert report.negative_index == [[2]] and report.negative_rank == [[9]] and report.negative_type == [["fallback"]]
    assert report.fallback_queries == [0] and ds[0]["negative_1"]["text"] == "doc2"
    _, report = mine(queries=["query"], corpus=WINDOW_CORPUS, positives=[3], query_embeddings=QUERY,
                     corpus_embeddings=ring(WINDOW_ANGLES), strategy="window", ranks=(9, 12), num_negatives=2,
                     fallback="nearest")
    assert sorted(report.negative_rank[0]) == [8, 9] and sorted(report.negative_type[0]) == ["fallback", "window"]
    # a window the pool fills takes no fallback
    _, report = mine(queries=["query"], corpus=WINDOW_CORPUS, positives=[3], query_embeddings=QUERY,
                     corpus_embeddings=ring(WINDOW_ANGLES), strategy="window", ranks=(3, 5), num_negatives=3,
                     fallback="nearest")
    assert report.negative_rank == [[3, 4, 5]] and report.fallback_queries == []
    with pytest.raises(ValueError, match="fallback='nearest' applies to strategy='window' and 'modality_aware'"):
        mine(queries=["query"], corpus=WINDOW_CORPUS, positives=[3], query_embeddings=QUERY,
             corpus_embeddings=ring(WINDOW_ANGLES), strategy="top_k", fallback="nearest")


def test_single_rank_and_excluded_items_do_not_count_as_ranks():
    # Added at the end: the query's own text (1 deg), a copy of the positive (2 deg), a copy of doc0 (4 deg).
    corpus = WINDOW_CORPUS + ["query", "doc3", "doc0"]
    embeddings = ring(WINDOW_ANGLES + [1, 2, 4])
    _, report = mine(queries=["query"], corpus=corpus, positives=[3], query_embeddings=QUERY,
                     corpus_embeddings=embeddings, ranks=7)
    assert report.negative_index == [[5]] and report.negative_rank == [[7]]  # rank 7 = doc5 (21 deg), as without them
    _, report = mine(queries=["query"], corpus=corpus, positives=[3], query_embeddings=QUERY,
                     corpus_embeddings=embeddings, strategy="top_k", top_k=9, num_negatives=9)
    assert report.negative_index == [[1, 4, 6, 0, 9, 7, 5, 8, 2]]  # 10, 11 and 12 never appear; doc0 once
    assert report.negative_rank == [list(range(1, 10))]


def test_shortfall_drops_rows_in_ntuple_and_keeps_found_in_triplet():
    kwargs = dict(queries=["query"], corpus=WINDOW_CORPUS, positives=[3], query_embeddings=QUERY,
                  corpus_embeddings=ring(WINDOW_ANGLES), ranks=(9, 10), num_negatives=2)
    ds, report = mine(**kwargs)
    assert len(ds) == 0 and report.found == [1] and report.dropped_queries == [0]
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    ds, report = mine(**kwargs, output_format="triplet")
    assert ds.column_names == ["anchor", "positive", "negative"]
    assert report.negative_index == [[2]] and ds["negative"] == [{"text": "doc2", "image": None}]


# --------------------------------------------------------------------------------------------------
# top-k with a margin
# --------------------------------------------------------------------------------------------------

# positive = index 2 (10 deg, score 0.98481). Ranked without it: 1 (2), 4 (5), 6 (8), 3 (12), 5 (15), 0 (20).
MARGIN_ANGLES = [20, 2, 10, 12, 5, 15, 8]


def test_top_k_with_margin():
    kwargs = dict(queries=["q"], corpus=[f"d{i}" for i in range(7)], positives=[2], query_embeddings=QUERY,
                  corpus_embeddings=ring(MARGIN_ANGLES), strategy="top_k", num_negatives=2)
    _, report = mine(**kwargs, top_k=6)
    assert report.negative_index == [[1, 4]] and report.margin_removed == 0
    # absolute margin 0.01: drop scores above 0.98481 - 0.01 = 0.97481, i.e. 2, 5, 8 and 12 deg (cos 12 = 0.97815),
    # BEFORE ranking (sentence-transformers' semantics): 15 and 20 deg become ranks 1 and 2
    _, report = mine(**kwargs, top_k=6, absolute_margin=0.01)
    assert report.negative_index == [[5, 0]] and report.negative_rank == [[1, 2]] and report.margin_removed == 4
    assert report.filtered == [4]
    ds, report = mine(**kwargs, top_k=2, absolute_margin=0.01)  # the filter does not eat the top-k
    assert report.negative_index == [[5, 0]] and report.dropped_queries == []
    # a negative margin keeps candidates up to 0.01 above the positive: 0.99481 drops 2 and 5 deg, keeps 8 deg
    _, report = mine(**kwargs, top_k=6, absolute_margin=-0.01)
    assert report.negative_index == [[6, 3]] and report.margin_removed == 2
    with pytest.warns(DeprecationWarning, match="absolute_margin"):  # margin: the old name, same meaning
        _, old = mine(**kwargs, top_k=6, margin=-0.01)
    assert old.negative_index == report.negative_index
    with pytest.raises(ValueError, match="not both"):
        mine(**kwargs, margin=0.1, absolute_margin=0.1)


def test_relative_margin_and_max_score_follow_sentence_transformers():
    """relative_margin 0.05 removes candidates above positive - |positive| * 0.05 (NV-Retriever's TopK-PercPos),
    max_score those above it; both before ranking."""
    kwargs = dict(queries=["q"], corpus=[f"d{i}" for i in range(7)], positives=[2], query_embeddings=QUERY,
                  corpus_embeddings=ring(MARGIN_ANGLES), strategy="top_k", num_negatives=2, top_k=6)
    scores = np.cos(np.radians(MARGIN_ANGLES))
    # 0.01: limit 0.98481 * 0.99 = 0.97496: 2, 5, 8, 12 deg removed
    _, report = mine(**kwargs, relative_margin=0.01)
    assert report.negative_index == [[5, 0]] and report.filtered == [4]
    limit = scores[2] - abs(scores[2]) * 0.005  # 0.97989: 2, 5, 8 deg removed, 12 deg (0.97815) kept
    assert scores[3] < limit < scores[6]
    _, report = mine(**kwargs, relative_margin=0.005)
    assert report.negative_index == [[3, 5]] and report.negative_rank == [[1, 2]] and report.filtered == [3]
    _, report = mine(**kwargs, max_score=0.992)  # cos 2 and cos 5 = 0.99619 removed, cos 8 = 0.99027 kept
    assert report.negative_index == [[6, 3]] and report.filtered == [2]
    # several filters: the lowest limit wins
    _, report = mine(**kwargs, max_score=0.992, relative_margin=0.005)
    assert report.negative_index == [[3, 5]] and report.filtered == [3]
    # a negative positive score: the limit is positive - |positive| * m (below it, never above: ST #3819)
    anti = ring([170, 172, 175, 178, 180, 165, 160])  # scores -0.985 .. -1; positive = 170 deg (-0.98481)
    # limit -0.98481 - 0.0098481 = -0.99466: 172 deg (-0.99027), 165 and 160 deg removed; (1 - m) * positive
    # (-0.97496) would have kept 172 deg as the hardest negative
    _, report = mine(**{**kwargs, "corpus_embeddings": anti, "positives": [0]}, relative_margin=0.01)
    assert report.negative_index == [[2, 3]] and report.filtered == [3]
    for bad in (dict(relative_margin=-0.1), dict(max_score=float("nan")), dict(absolute_margin="0.1")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            mine(**kwargs, **bad)


# --------------------------------------------------------------------------------------------------
# modality-aware (MM-Embed type-1 / type-2)
# --------------------------------------------------------------------------------------------------

RED, A, B, C, D, E = (square(c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (99, 9, 9), (9, 99, 9)])
# index: content (angle): 0 RED (20, positive)  1 "red" (5)  2 A (10)  3 "crimson" (15)  4 B (25)  5 "blue" (30)
#   6 C (35)  7 D (40)  8 "green" (45)  9 E (50)  10 RED copy (1, duplicate of the positive)  11 the query text (2)
MODAL_CORPUS = [RED, "red", A, "crimson", B, "blue", C, D, "green", E, RED.copy(), "a red circle"]
MODAL_ANGLES = [20, 5, 10, 15, 25, 30, 35, 40, 45, 50, 1, 2]
# Ranked without 0, 10, 11: 1 (r1), 2 (r2), 3 (r3), 4 (r4), 5 (r5), 6 (r6), 7 (r7), 8 (r8), 9 (r9)


def modal(**kwargs):
    base = dict(queries=["a red circle"], corpus=MODAL_CORPUS, positives=[RED.copy()], query_embeddings=QUERY,
                corpus_embeddings=ring(MODAL_ANGLES), strategy="modality_aware", ranks=(4, 7), top_k=9)
    return mine(**{**base, **kwargs})


def test_modality_aware_type1_and_type2():
    ds, report = modal(num_negatives=4)
    assert report.positive_index == [0]  # the positive given as content is found by its hash
    # type-1: text ranked above the image positive (1, 3); type-2: images at ranks 4-7 (4, 6; 5 is text)
    assert report.negative_index == [[1, 3, 4, 6]]
    assert report.negative_type == [["type1", "type1", "type2", "type2"]]
    assert report.negative_rank == [[1, 3, 4, 6]]
    row = ds[0]
    assert row["anchor"] == {"text": "a red circle", "image": None}
    assert row["negative_1"] == {"text": "red", "image": None} and row["negative_2"]["text"] == "crimson"
    assert content_key(row["positive"]["image"]) == content_key(RED)
    assert content_key(row["negative_3"]["image"]) == content_key(B) and row["negative_3"]["text"] is None

    _, report = modal(num_negatives=4, max_wrong_modality=1)
    assert report.negative_index == [[1, 4, 6, 7]]
    _, report = modal(num_negatives=3, top_k=2)  # type-1 only within the top 2 ranks
    assert report.negative_index == [[1, 4, 6]]
    # cos 20 - 0.04 = 0.8997: the images A (10 deg) and B (25 deg) are removed before ranking; the texts
    # (type-1, wrong modality) are kept; C, D, E move up to ranks 4, 5, 7
    _, report = modal(num_negatives=4, absolute_margin=0.04)
    assert report.negative_index == [[1, 3, 6, 7]] and report.negative_rank == [[1, 2, 4, 5]]
    assert report.filtered == [2]
    _, report = modal(num_negatives=2, target_modality="text")  # images above the positive become type-1
    assert report.negative_index == [[2, 5]] and report.negative_type == [["type1", "type2"]]


def test_modality_aware_filter_and_fallback_keep_every_row():
    """Category-shaped: the positive's look-alikes fill the type-2 window. relative_margin removes them (counted
    in ``filtered``) and the window moves to the candidates below them; when the pool has nothing left in the
    window, fallback='nearest' takes the candidate nearest it instead of dropping the row."""
    # the positive RED at 20 deg; six images at 21-26 deg score within 1% of it (the query's own category)
    look_alikes = [square((10 * i, 0, 0)) for i in range(1, 7)]
    others = [square((0, 10 * i, 50)) for i in range(1, 4)]
    corpus = [RED, *look_alikes, "a text", *others]
    angles = [20, 21, 22, 23, 24, 25, 26, 5, 60, 65, 70]
    base = dict(queries=["a red circle"], corpus=corpus, positives=[0], query_embeddings=QUERY,
                corpus_embeddings=ring(angles), strategy="modality_aware", ranks=(3, 4), top_k=10)
    _, report = mine(**base)  # unfiltered: the window holds look-alikes 22 and 23 deg (a text is rank 1)
    assert report.negative_index == [[7]] and report.negative_type == [["type1"]]
    _, report = mine(**base, num_negatives=2)
    assert report.negative_index == [[7, 2]] and report.negative_rank == [[1, 3]]
    _, report = mine(**base, num_negatives=2, relative_margin=0.05)  # 0.94 * 0.95 = 0.893 < cos 26: all six out
    assert report.filtered == [6]
    assert report.negative_index == [[7, 9]] and report.negative_rank == [[1, 3]]  # ranks: text, 60, 65, 70
    # a window the filtered pool cannot fill: ranks 6-7 do not exist; the nearest candidates are taken
    ds, report = mine(**{**base, "ranks": (6, 7)}, num_negatives=2, relative_margin=0.05, fallback="nearest")
    assert report.dropped_queries == [] and len(ds) == 1
    assert report.negative_index == [[7, 10]] and report.negative_type == [["type1", "fallback"]]
    _, report = mine(**{**base, "ranks": (6, 7)}, num_negatives=2, relative_margin=0.05)
    assert report.dropped_queries == [0]  # without the fallback the row is dropped (and a warning says so)


def test_modality_aware_with_ids_and_modalities_only():
    modalities = ["image", "text", "image", "text", "image", "text", "image", "image", "text", "image", "image", "text"]
    ds, report = mine(query_ids=["c11"], corpus_ids=[f"c{i}" for i in range(12)], corpus_modalities=modalities,
                      positives=[["c0"]], query_embeddings=QUERY, corpus_embeddings=ring(MODAL_ANGLES),
                      strategy="modality_aware", ranks=(4, 7), top_k=9, num_negatives=4)
    # Without content the RED copy (c10, 1 deg) is a distinct image at rank 1, so the ranks shift by one;
    # c11 has the query's id, so it is the query itself and excluded.
    assert report.negative_index == [[1, 3, 4, 6]] and report.negative_rank == [[2, 4, 5, 7]]
    assert ds[0] == {"anchor": "c11", "positive": "c0", "negative_1": "c1", "negative_2": "c3",
                     "negative_3": "c4", "negative_4": "c6"}


# --------------------------------------------------------------------------------------------------
# guarantees: never a positive, a duplicate of one, or the query; identical queries share positives
# --------------------------------------------------------------------------------------------------


def test_never_positive_duplicate_or_query_and_identical_queries_share_positives():
    img = square((1, 2, 3))
    corpus = ["p0", "p1", img, img.copy(), {"text": "q", "image": None}, "x", "y", {"text": "cap", "image": img.copy()},
              {"text": "cap", "image": img}]
    emb = ring([3, 4, 5, 6, 1, 20, 30, 2, 7])
    queries = ["q", "q", {"text": "cap", "image": img.copy()}]
    positives = [0, 1, [2]]
    _, report = mine(queries=queries, corpus=corpus, positives=positives, query_embeddings=np.repeat(QUERY, 3, 0),
                     corpus_embeddings=emb, strategy="top_k", top_k=9, num_negatives=9, output_format="triplet")
    by_query = {q: [] for q in range(3)}
    for q, negs in zip(report.query_index, report.negative_index):
        by_query[q] += negs
    # queries 0 and 1 are identical: p0 and p1 are positives of both; item 4 equals the query "q"
    assert by_query[0] == by_query[1] == [7, 2, 5, 6]
    # query 2 = "cap" + img: positive img (2) and its copy (3) out, item 7 (= the query) and its copy 8 out
    assert by_query[2] == [4, 0, 1, 5, 6]
    for q, negs in by_query.items():
        keys = {content_key(normalize_input(corpus[j], j)) for j in negs}
        assert len(keys) == len(negs)  # no repeated content in one query's negatives


def test_other_positives_are_never_negatives_and_give_no_rows():
    """M-BEIR's pos_cand_list: every listed positive is excluded, the first alone gives the row."""
    ids = [f"d{i}" for i in range(10)]
    kwargs = dict(query_ids=["q"], corpus_ids=ids, query_embeddings=QUERY, corpus_embeddings=ring(WINDOW_ANGLES),
                  positives=["d3"], ranks=(1, 2), num_negatives=2)
    _, report = mine(**kwargs)
    assert report.negative_index == [[1, 4]]  # d1 (another listed positive) was mined as a negative
    _, report = mine(**kwargs, other_positives=[["d1", "d3"]])
    assert report.negative_index == [[4, 6]] and report.positive_index == [3]  # one row, d1 never a negative
    with pytest.raises(KeyError, match=r"other_positives\[0\].*'d99'"):
        mine(**kwargs, other_positives=[["d99"]])
    with pytest.raises(ValueError, match="other_positives has 2 rows"):
        mine(**kwargs, other_positives=[[], []])


def test_positive_ids_lists_and_random_sampling():
    ids = [f"d{i}" for i in range(10)]
    kwargs = dict(query_ids=["q"], corpus_ids=ids, query_embeddings=QUERY, corpus_embeddings=ring(WINDOW_ANGLES))
    _, report = mine(positives=[["d3", 1]], ranks=(1, 2), num_negatives=2, **kwargs)  # d3 by id, index 1
    assert report.negative_index == [[4, 6], [4, 6]] and report.positive_index == [3, 1]  # a row per positive
    picks = [mine(positives=["d3"], ranks=(2, 8), num_negatives=3, sampling="random", seed=s, **kwargs)[1]
             for s in (0, 0, 1, 2, 3)]
    window = {4, 6, 0, 9, 7, 5, 8}  # ranks 2-8
    assert picks[0].negative_index == picks[1].negative_index  # same seed, same draw
    for report in picks:
        assert set(report.negative_index[0]) <= window and len(set(report.negative_index[0])) == 3
        assert report.negative_rank[0] == sorted(report.negative_rank[0])  # hardest first
    assert len({tuple(r.negative_index[0]) for r in picks}) > 1  # draws differ across seeds


# --------------------------------------------------------------------------------------------------
# chunked search == brute force
# --------------------------------------------------------------------------------------------------


def brute_force(queries, corpus, positives, Q, C, first, last, n, absolute_margin=None, relative_margin=None):
    """Reference: full score matrix, exclusions by text, duplicates collapsed and candidates above the
    margins' limit removed, ranks counted after them."""
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Cn = C / np.linalg.norm(C, axis=1, keepdims=True)
    S = Qn.astype(np.float64) @ Cn.T.astype(np.float64)
    first_of = {}
    for j, text in enumerate(corpus):
        first_of.setdefault(text, j)
    shared = {}
    for q, text in enumerate(queries):
        shared.setdefault(text, set()).update(positives[q])
    out = []
    for q, text in enumerate(queries):
        banned = {corpus[p] for p in shared[text]} | {text}
        order = sorted((j for j in range(len(corpus)) if first_of[corpus[j]] == j and corpus[j] not in banned),
                       key=lambda j: -S[q, j])
        ref = min(S[q, p] for p in shared[text])
        limit = min(ref - (absolute_margin if absolute_margin is not None else -np.inf),
                    ref - abs(ref) * (relative_margin if relative_margin is not None else -np.inf))
        order = [j for j in order if S[q, j] <= limit]
        picked = [(j, r + 1) for r, j in enumerate(order) if first <= r + 1 <= last][:n]
        out.append(picked if len(picked) == n else None)
    return out


BRUTE_FORCE_CASES = [("window", 3, 9, 4, {}), ("top_k", 1, 12, 5, dict(absolute_margin=0.1)),
                     ("window", 3, 9, 4, dict(relative_margin=0.3)),
                     ("top_k", 1, 12, 5, dict(absolute_margin=0.05, relative_margin=0.2))]


@pytest.fixture(scope="module")
def random_problem():
    g = np.random.default_rng(0)
    corpus = [f"doc{i}" for i in range(90)] + [f"doc{i}" for i in range(7)]  # 7 duplicated texts at the end
    queries = [f"query{i}" for i in range(20)] + ["doc5", "doc40", "query3"]  # 2 equal corpus items, 1 repeat
    positives = [[int(g.integers(90))] for _ in queries]
    positives[4].append(2)
    Q = g.standard_normal((len(queries), 6)).astype(np.float32)
    C = g.standard_normal((len(corpus), 6)).astype(np.float32) * g.uniform(0.5, 2, (len(corpus), 1)).astype(np.float32)
    Q[20], Q[21] = C[5] + 0.01, C[40] - 0.01  # queries equal to corpus items 5 and 40 would rank them first
    return queries, corpus, positives, Q, C


@pytest.mark.parametrize("chunk_size,query_chunk_size", [(1, 1), (5, 4), (16, 100), (97, 7), (1000, 3)])
def test_chunked_search_equals_brute_force(random_problem, chunk_size, query_chunk_size):
    queries, corpus, positives, Q, C = random_problem
    for strategy, first, last, n, margins in BRUTE_FORCE_CASES:
        expected = brute_force(queries, corpus, positives, Q, C, first, last, n, **margins)
        kwargs = {**(dict(ranks=(first, last)) if strategy == "window" else dict(top_k=last)), **margins}
        _, report = mine(queries=queries, corpus=corpus, positives=positives, query_embeddings=Q, corpus_embeddings=C,
                         strategy=strategy, num_negatives=n, chunk_size=chunk_size,
                         query_chunk_size=query_chunk_size, **kwargs)
        got = {q: list(zip(negs, ranks)) for q, negs, ranks in
               zip(report.query_index, report.negative_index, report.negative_rank)}
        assert [got.get(q) for q in range(len(queries))] == expected
        assert sum(e is None for e in expected) == len(report.dropped_queries)


def check_faiss_path(random_problem):
    queries, corpus, positives, Q, C = random_problem
    for chunk_size, query_chunk_size in [(16, 5), (1, 3), (1000, 100)]:
        for strategy, first, last, n, margins in BRUTE_FORCE_CASES:
            expected = brute_force(queries, corpus, positives, Q, C, first, last, n, **margins)
            kwargs = {**(dict(ranks=(first, last)) if strategy == "window" else dict(top_k=last)), **margins}
            _, report = mine(queries=queries, corpus=corpus, positives=positives, query_embeddings=Q,
                             corpus_embeddings=C, strategy=strategy, num_negatives=n, chunk_size=chunk_size,
                             query_chunk_size=query_chunk_size, use_faiss=True, **kwargs)
            got = {q: list(zip(negs, ranks)) for q, negs, ranks in
                   zip(report.query_index, report.negative_index, report.negative_rank)}
            assert [got.get(q) for q in range(len(queries))] == expected, (chunk_size, strategy)


def test_faiss_path_equals_brute_force_with_a_stand_in(random_problem, monkeypatch):
    """The FAISS branch (per-chunk flat inner-product index), run against a NumPy stand-in of faiss."""

    class IndexFlatIP:
        def __init__(self, dim):
            self.data = np.zeros((0, dim), np.float32)

        def add(self, x):
            self.data = np.concatenate([self.data, x])

        def search(self, x, k):
            scores = x @ self.data.T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(scores, order, 1), order.astype(np.int64)

    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=IndexFlatIP))
    check_faiss_path(random_problem)


def test_faiss_path_equals_brute_force_with_real_faiss(random_problem):
    faiss = pytest.importorskip("faiss", reason="faiss is not installed (pip install faiss-cpu); "
                                "the stand-in test covers the code path")
    assert hasattr(faiss, "IndexFlatIP") and not isinstance(faiss, types.SimpleNamespace)
    check_faiss_path(random_problem)


def test_use_faiss_without_faiss_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ImportError, match=r"use_faiss=True needs the faiss package \(pip install faiss-cpu\)"):
        mine(queries=["q"], corpus=["a", "b"], positives=[0], query_embeddings=QUERY, corpus_embeddings=ring([1, 2]),
             ranks=1, use_faiss=True)


# --------------------------------------------------------------------------------------------------
# real tiny model: cache resume, end to end into the loss
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model("qwen2_vl"), recipe="e5v")


@pytest.fixture(scope="module")
def emoji():
    train = load_emoji("train")
    return [train[i]["image"].convert("RGB") for i in range(8)], list(train["name_en"][:8]), list(train["keywords_en"][:8])


def test_cache_resumes_after_crash_and_is_reused(model, emoji, tmp_path, monkeypatch):
    images, names, _ = emoji
    corpus = images[:6] + names[:6]  # 12 inputs, chunks of 4 -> 3 chunks
    kwargs = dict(model=model, queries=names[6:8] + ["a face"], corpus=corpus, positives=[0, 7, 2],
                  ranks=(2, 5), num_negatives=2, chunk_size=4, batch_size=4)
    _, expected = mine(**kwargs)

    original, calls = model.encode_document, []

    def crashing(inputs, **kw):
        calls.append(len(inputs))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return original(inputs, **kw)

    monkeypatch.setattr(model, "encode_document", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        mine(**kwargs, cache_dir=tmp_path)
    assert [p.name for p in sorted(tmp_path.glob("corpus-*/chunk-*.npy"))] == ["chunk-000000.npy"]

    def counting(inputs, **kw):
        calls.append(len(inputs))
        return original(inputs, **kw)

    monkeypatch.setattr(model, "encode_document", counting)
    calls.clear()
    ds, resumed = mine(**kwargs, cache_dir=tmp_path)
    assert calls == [4, 4]  # chunk 0 was not encoded again
    calls.clear()
    _, reused = mine(**kwargs, cache_dir=tmp_path)
    assert calls == []  # everything from the cache
    for report in (resumed, reused):
        assert report.negative_index == expected.negative_index and report.query_index == expected.query_index
        assert np.allclose(report.negative_score, expected.negative_score, atol=1e-6)
    assert len(ds) == 3
    calls.clear()
    mine(**{**kwargs, "corpus": corpus[:-1] + ["another name"]}, cache_dir=tmp_path)
    assert calls == [4, 4, 4]  # other content, other fingerprint: nothing reused
    assert len(list(tmp_path.glob("corpus-*"))) == 2


def test_cache_chunk_replaced_or_without_checksum_is_reencoded(model, emoji, tmp_path, monkeypatch, caplog):
    images, names, _ = emoji
    kwargs = dict(model=model, queries=names[6:8] + ["a face"], corpus=images[:6] + names[:6], positives=[0, 7, 2],
                  ranks=(2, 5), num_negatives=2, chunk_size=4, batch_size=4)
    _, expected = mine(**kwargs)  # no cache
    mine(**kwargs, cache_dir=tmp_path)
    (folder,) = tmp_path.glob("corpus-*")
    chunk0, chunk1 = folder / "chunk-000000.npy", folder / "chunk-000001.npy"
    right = np.load(chunk1)
    np.save(chunk1, np.load(chunk0))  # another array of the same shape and dtype
    assert np.load(chunk1).shape == right.shape and not np.allclose(np.load(chunk1), right)

    original, calls = model.encode_document, []

    def counting(inputs, **kw):
        calls.append(len(inputs))
        return original(inputs, **kw)

    def same_as_uncached(report):
        assert report.query_index == expected.query_index and report.positive_index == expected.positive_index
        assert report.negative_index == expected.negative_index
        assert np.allclose(report.negative_score, expected.negative_score, atol=1e-6)

    monkeypatch.setattr(model, "encode_document", counting)
    with caplog.at_level(logging.WARNING, logger="mm_st.mining"):
        _, report = mine(**kwargs, cache_dir=tmp_path)
    assert calls == [4]  # only chunk 1 is encoded again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Re-encoding cache chunk" in warnings[0] and str(chunk1) in warnings[0]
    assert "does not match the manifest" in warnings[0]
    same_as_uncached(report)
    assert np.allclose(np.load(chunk1), right, atol=1e-6)

    # A manifest without checksums (caches written before them): every chunk is re-encoded once, then trusted.
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["chunk_sha256"]) == ["chunk-000000.npy", "chunk-000001.npy", "chunk-000002.npy"]
    del manifest["chunk_sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    calls.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mm_st.mining"):
        _, report = mine(**kwargs, cache_dir=tmp_path)
    assert calls == [4, 4, 4]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("records no checksum" in w for w in warnings)
    same_as_uncached(report)
    calls.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mm_st.mining"):
        _, report = mine(**kwargs, cache_dir=tmp_path)
    assert calls == [] and not [r for r in caplog.records if r.levelno == logging.WARNING]
    same_as_uncached(report)


def test_end_to_end_tiny_model_mixed_corpus_into_loss(model, emoji):
    images, names, keywords = emoji
    corpus = images[:5] + names[:6]  # 5 images, 6 names; image 5 only arrives as a positive
    queries = [" ".join(k) for k in keywords[:6]]
    positives = [0, 1, 2, 3, 4, images[5].copy()]
    ds, report = mine(model=model, queries=queries, corpus=corpus, positives=positives, strategy="modality_aware",
                      ranks=(1, 11), top_k=11, num_negatives=2, max_wrong_modality=1)
    assert report.appended_positives == 1 and report.positive_index[-1] == 11

    # reference: embed with the model directly, rank by hand
    full = corpus + [images[5]]
    Qe = torch.nn.functional.normalize(torch.as_tensor(model.encode_query(queries)), dim=1)
    Ce = torch.nn.functional.normalize(torch.as_tensor(model.encode_document(full)), dim=1)
    S = Qe @ Ce.T
    is_image = [isinstance(x, Image.Image) for x in full]
    for q in range(len(queries)):
        p = 11 if q == 5 else positives[q]
        order = sorted((j for j in range(len(full)) if j != p), key=lambda j: -S[q, j].item())
        type1 = [j for j in order if not is_image[j] and S[q, j] > S[q, p]]
        type2 = [j for j in order if is_image[j]]
        expected = sorted((type1[:1] + type2)[:2], key=order.index)  # at most one wrong-modality negative
        row = report.query_index.index(q)
        assert report.negative_index[row] == expected
        assert report.negative_type[row] == ["type1" if j in type1 else "type2" for j in expected]
    assert len(ds) == 6 and report.dropped_queries == []
    assert {kind for kinds in report.negative_type for kind in kinds} == {"type1", "type2"}

    columns = [list(ds[name]) for name in ds.column_names]
    for row, kinds in enumerate(report.negative_type):  # type-1 = text (wrong modality), type-2 = image
        for column, kind in zip(columns[2:], kinds):
            item = column[row]
            assert (item["image"] is None and item["text"] is not None) if kind == "type1" else (item["image"] is not None)
    assert all(x["image"] is not None and x["text"] is None for x in columns[1])  # positives: images
    loss = MultimodalInfoNCELoss(model, temperature=0.05)
    value = loss([model.preprocess(column) for column in columns], None)
    assert torch.isfinite(value) and value.item() > 0


# --------------------------------------------------------------------------------------------------
# errors name the offending item
# --------------------------------------------------------------------------------------------------


def test_bad_input_errors_name_the_item():
    base = dict(queries=["q0", "q1"], corpus=["a", "b", "c"], positives=[0, 1], query_embeddings=ring([0, 1]),
                corpus_embeddings=ring([1, 2, 3]), show_progress_bar=False)

    def fails(exception, match, **changes):
        with pytest.raises(exception, match=match):
            mine_hard_negatives(**{**base, **changes})

    fails(ValueError, r"query_embeddings has 3 rows but positives has 2", query_embeddings=ring([0, 1, 2]))
    fails(ValueError, r"corpus_embeddings has 2 rows but corpus has 3", corpus_embeddings=ring([0, 1]))
    fails(IndexError, r"positives\[1\] \(query 1\): corpus index 7 is out of range for a corpus of 3", positives=[0, 7])
    fails(ValueError, r"positives\[0\] \(query 0\) is empty", positives=[[], 1])
    fails(ValueError, r"Unknown strategy 'hardest'", strategy="hardest")
    fails(ValueError, r"ranks must be .* got \(50, 46\)", ranks=(50, 46))
    fails(ValueError, r"ranks must be .* got 0", ranks=0)
    fails(ValueError, r"num_negatives=3 does not fit in ranks \(1, 2\)", ranks=(1, 2), num_negatives=3)
    fails(ValueError, r"query embeddings have dimension 3 but corpus embeddings have dimension 2",
          query_embeddings=np.ones((2, 3), np.float32))
    fails(ValueError, r"corpus_embeddings must be 2-D", corpus_embeddings=np.ones(3, np.float32))
    fails(ValueError, r"positives\[1\] \(query 1\): this positive's content is not in the corpus", positives=[0, "zzz"])
    fails(KeyError, r"positives\[1\] \(query 1\): 'zzz' is not in corpus_ids", corpus_ids=["a", "b", "c"],
          positives=[0, "zzz"])
    fails(ValueError, r"corpus_ids\[2\] repeats the id 'a' of corpus_ids\[0\]", corpus_ids=["a", "b", "a"])
    fails(TypeError, r"corpus_ids\[1\] is int", corpus_ids=["a", 1, "c"])
    fails(ValueError, r"corpus\[1\]: Input 1 is None", corpus=["a", None, "c"])
    fails(ValueError, r"corpus_modalities\[2\]: unknown modality 'audio'", corpus=None, corpus_ids=["a", "b", "c"],
          corpus_modalities=["text", "image", "audio"])
    fails(ValueError, r"modality of query 0's positive \(corpus item 0\)", corpus=None, corpus_ids=["a", "b", "c"],
          strategy="modality_aware")
    fails(ValueError, r"target_modality and max_wrong_modality only apply", target_modality="image")
    fails(ValueError, r"The corpus embedding of item 2 holds NaN", corpus_embeddings=np.array(
        [[1, 0], [0, 1], [np.nan, 0]], np.float32))
    fails(ValueError, r"Pass model= to encode the queries", query_embeddings=None)
