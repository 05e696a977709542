"""bench.ann_peers: exact baseline, recall, and that each index reaches exact results at its widest setting."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is in the [bench] extra")
pytest.importorskip("annoy", reason="annoy is in the [bench] extra")

from bench import ann_peers, corpus
from bench.ann_peers import K, Scale
from trainer import metrics
from trainer.retrieval.scann_tuning import recall_against, tree_candidates


def naive_top_k(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_make_embeddings_is_deterministic_and_clustered() -> None:
    items, queries = ann_peers.make_embeddings(3000, 50, 8, seed=1)
    again, _ = ann_peers.make_embeddings(3000, 50, 8, seed=1)
    assert items.shape == (3000, 8) and queries.shape == (50, 8) and items.dtype == np.float32
    np.testing.assert_array_equal(items, again)
    nearest = np.linalg.norm(queries[:, None, :] - items[None, :, :], axis=2).min(axis=1)
    typical = np.linalg.norm(queries[:, None, :] - items[None, :200, :], axis=2).mean()
    assert np.median(nearest) < 0.5 * typical  # queries are drawn near the data


def test_brute_force_in_query_blocks_matches_a_full_sort(corpus: tuple[np.ndarray, np.ndarray],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    items, queries = corpus
    monkeypatch.setattr(metrics, "SCORE_BLOCK_FLOATS", 7 * len(items))  # blocks of 7 queries
    search_batch = ann_peers.brute_force_family(items).settings[0].search_batch
    np.testing.assert_array_equal(search_batch(queries), naive_top_k(items, queries, K))


def test_recall_ignores_the_minus_one_padding_of_faiss() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [8, 7, 6, 5]])
    assert recall_against(found, exact) == pytest.approx((2 + 4) / 8)


def test_brute_force_single_query_agrees_with_the_batch(corpus: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = corpus
    setting = ann_peers.brute_force_family(items).settings[0]
    batch = setting.search_batch(queries)
    np.testing.assert_array_equal(batch, naive_top_k(items, queries, K))
    np.testing.assert_array_equal(setting.search_one(queries[3]), batch[3])


@pytest.mark.parametrize(
    "build, narrow_recall, wide_recall",
    [
        (lambda items: ann_peers.scann_family(items, 20, [1, 20], [K, items.shape[0]]), 0.5, 0.999),
        (lambda items: ann_peers.faiss_family(items, "faiss-ivf-flat", "IVF20,Flat", ann_peers.ivf_searches([1, 20])),
         0.5, 1.0),
        # HNSW over inner products is not exhaustive even at a huge ef (small-norm items get few in-links).
        (lambda items: ann_peers.faiss_family(items, "faiss-hnsw", "HNSW16,Flat", ann_peers.hnsw_searches([100, 2000])),
         0.5, 0.85),
        (lambda items: ann_peers.annoy_family(items, num_trees=5, search_k_factors=[1, 1000]), 0.3, 0.99),
    ],
    ids=["scann", "faiss-ivf-flat", "faiss-hnsw", "annoy"],
)
def test_each_index_trades_recall_for_speed_up_to_near_exact(
        build, narrow_recall: float, wide_recall: float, corpus: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = corpus
    exact = naive_top_k(items, queries, K)
    settings = build(items).settings
    narrow, wide = [ann_peers.measure(setting, queries, exact, Scale(len(items), len(queries), 5, 1))
                    for setting in (settings[0], settings[-1])]
    assert narrow_recall <= narrow["recall"] <= wide["recall"] and wide["recall"] >= wide_recall
    assert wide["batch_qps"] > 0 and 0 < wide["latency_ms_p50"] <= wide["latency_ms_p99"]
    one = build(items).settings[-1].search_one(queries[0])
    assert recall_against(one[None, :], exact[:1]) >= wide_recall - 0.1


def test_narrow_scann_search_trades_recall_for_speed(corpus: tuple[np.ndarray, np.ndarray]) -> None:
    items, queries = corpus
    exact = naive_top_k(items, queries, K)
    family = ann_peers.scann_family(items, 40, [1, 40], [K, 1000])
    recalls = {tuple(s.params.values()): recall_against(s.search_batch(queries), exact)
               for s in family.settings}
    assert recalls[(40, 1, K)] < recalls[(40, 40, 1000)]
    assert recalls[(40, 40, 1000)] >= 0.99


def test_best_at_recall_picks_the_fastest_setting_reaching_each_target() -> None:
    points = [
        {"library": ann_peers.BRUTE_FORCE, "recall": 1.0, "batch_qps": 100.0, "latency_ms_p50": 5.0},
        {"library": "x", "recall": 0.92, "batch_qps": 5000.0, "latency_ms_p50": 0.1},
        {"library": "x", "recall": 0.97, "batch_qps": 2000.0, "latency_ms_p50": 0.2},
        {"library": "x", "recall": 0.999, "batch_qps": 400.0, "latency_ms_p50": 0.9},
        {"library": "y", "recall": 0.5, "batch_qps": 9000.0, "latency_ms_p50": 0.01},
    ]
    rows = {row["library"]: row for row in ann_peers.best_at_recall(points)}
    assert rows["x"]["qps@0.9"] == 5000.0 and rows["x"]["speedup@0.9"] == 50.0
    assert rows["x"]["qps@0.95"] == 2000.0 and rows["x"]["p50_ms@0.95"] == 0.2
    assert rows["x"]["qps@0.99"] == 400.0 and rows["x"]["speedup@0.99"] == 4.0
    assert rows["y"]["qps@0.9"] is None and rows["y"]["speedup@0.9"] is None


@pytest.mark.parametrize("text", ["abc", "100", "5000,x"])
def test_bad_sizes_are_rejected_with_the_reason(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ann_peers.main(["--out", "unused.json", "--sizes", text])
    assert "--sizes" in capsys.readouterr().err


def test_realistic_embeddings_come_from_the_fitted_corpus_model() -> None:
    items, queries = ann_peers.realistic_embeddings(2000, 30, seed=4)
    assert items.shape == (2000, ann_peers.DIM) and queries.shape == (30, ann_peers.DIM)
    np.testing.assert_array_equal(items, ann_peers.realistic_embeddings(2000, 30, seed=4)[0])
    params = corpus.load_params()
    np.testing.assert_allclose(np.median(np.linalg.norm(items, axis=1)), params.item_norm_quantiles[50], rtol=0.01)


def test_the_scann_sweep_searches_the_export_tuners_grid() -> None:
    items, _ = ann_peers.realistic_embeddings(3000, 10, seed=0)
    make_scann = list(ann_peers.families_for(items))[1]
    swept = {(s.params["num_leaves"], s.params["leaves_to_search"], s.params["reorder"])
             for s in make_scann().settings}
    assert swept == {(p.num_leaves, p.num_leaves_to_search, p.reorder) for p in tree_candidates(3000, K)}


@pytest.mark.parametrize(("nlist", "expected"), [(1000, [5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500]),
                                                 (40, [1, 2, 3, 4, 6, 8, 12, 20])])
def test_ivf_probes_the_fractions_of_its_lists_that_scann_searches_of_its_leaves(nlist: int,
                                                                                 expected: list[int]) -> None:
    assert ann_peers.ivf_probes(nlist) == expected
