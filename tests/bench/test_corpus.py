"""bench.corpus: the fitted generator reproduces the spectrum and norm spread it was fitted on, deterministically."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from bench import corpus


def trained_like(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in "trained" items with a decaying spectrum, a mean offset and log-normal norms, and queries."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    items = (rng.standard_normal((n, dim)) * np.linspace(2.0, 0.1, dim)) @ basis.T + 3.0 * basis[:, 0]
    items *= np.exp(0.3 * rng.standard_normal(n))[:, None]
    queries = (rng.standard_normal((n // 2, dim)) * np.linspace(1.0, 0.2, dim)) @ basis.T + 1.5 * basis[:, 1]
    return items.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> tuple[corpus.CorpusParams, np.ndarray, np.ndarray]:
    items, queries = trained_like(4000, 8, seed=5)
    return corpus.fit(items, queries, "stand-in"), items, queries


def test_generated_items_match_the_fitted_spectrum_and_norm_quantiles(fitted) -> None:
    params, items, _ = fitted
    generated = corpus.generate(params, 50_000, seed=1)
    assert generated.shape == (50_000, 8) and generated.dtype == np.float32
    np.testing.assert_allclose(corpus.spectrum(generated), corpus.spectrum(items), rtol=0.15)
    levels = np.linspace(0.02, 0.98, 9)
    np.testing.assert_allclose(np.quantile(np.linalg.norm(generated, axis=1), levels),
                               np.quantile(np.linalg.norm(items, axis=1), levels), rtol=0.03)


def test_generated_queries_match_the_queries_mean_and_norms(fitted) -> None:
    params, items, queries = fitted
    axes = np.linalg.svd(items - items.mean(axis=0), full_matrices=False)[2].T
    generated = corpus.generate_queries(params, 40_000, seed=2)
    # The generator lives in the items' principal axes; the stand-in queries, moved there, must agree.
    np.testing.assert_allclose(generated.mean(axis=0), (queries @ axes).mean(axis=0), atol=0.1)
    np.testing.assert_allclose(np.median(np.linalg.norm(generated, axis=1)),
                               np.median(np.linalg.norm(queries, axis=1)), rtol=0.02)


def test_generation_is_deterministic_per_seed(fitted) -> None:
    params = fitted[0]
    np.testing.assert_array_equal(corpus.generate(params, 500, seed=3), corpus.generate(params, 500, seed=3))
    assert not np.array_equal(corpus.generate(params, 500, seed=3), corpus.generate(params, 500, seed=4))


def test_a_frame_moves_the_corpus_into_another_models_space(fitted) -> None:
    params, _, _ = fitted
    rng = np.random.default_rng(9)
    other = rng.standard_normal((2000, 8)) * 0.5 + 4.0  # another model: other mean, scale and axes
    frame = corpus.frame_of(other, params)
    placed = corpus.generate(params, 20_000, seed=1, frame=frame)
    np.testing.assert_allclose(placed.mean(axis=0), other.mean(axis=0), atol=0.1)
    own = corpus.spectrum(corpus.generate(params, 20_000, seed=1))
    np.testing.assert_allclose(corpus.spectrum(placed) / own, frame.scale, rtol=0.02)
    with pytest.raises(ValueError, match=r"expected shape \[M, 8\], got \[10, 3\]"):
        corpus.frame_of(np.zeros((10, 3)), params)


def test_stored_parameters_round_trip_and_bad_files_are_named(fitted, tmp_path: pathlib.Path) -> None:
    params = fitted[0]
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params.to_json()))
    loaded = corpus.load_params(path)
    np.testing.assert_allclose(loaded.item_std, params.item_std, atol=1e-6)
    document = params.to_json()
    document["item_std"] = document["item_std"][:3]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"params.json: corpus parameter item_std: expected shape \(8,\), got \(3,\)"):
        corpus.load_params(path)
    with pytest.raises(ValueError, match="no corpus parameters at .*missing.json"):
        corpus.load_params(tmp_path / "missing.json")


def test_the_shipped_parameters_describe_a_32_d_trained_model() -> None:
    params = corpus.load_params()
    assert params.dim == 32 and np.all(np.diff(params.item_std) <= 0)
    assert np.all(np.diff(params.item_norm_quantiles) >= 0)
    assert "trained on a synthetic log" in corpus.describe(params)
