"""Realistic ANN corpora: item and query embeddings shaped like a trained two-tower model's.

The generative model (its parameters fitted once from a trained model and stored in
bench/corpus_params.json, so generation is deterministic and takes seconds, not a training run):

- Coordinates are those of the reference model's item principal axes (PCA of its item embeddings).
- Items: y = mu_item + z * s_item with z ~ N(0, I_d), where s_item [d] are the item embeddings' standard
  deviations along the principal axes (the singular values / sqrt(M): the spectrum); then each y is
  rescaled to the norm that the rank of |y| in the corpus takes in the trained items' norm quantiles
  (`item_norm_quantiles`, 101 points): the norm spread of the trained items, with the Gaussian's own
  coupling of direction and norm kept.
- Queries: y = mu_query + L z with L the Cholesky factor of the query-tower outputs' covariance in the same
  axes, then rescaled to the trained queries' norm quantiles likewise: queries lie where a trained query
  tower puts them relative to the items (mean offset, shared directions), which decides how hard MIPS is.

`generate(params, n, seed)` returns such items in the reference frame; `frame_of(embeddings)` and
`generate(..., frame=...)` place the same shape into another model's space (its own item mean, principal
axes and scale), so that a benchmark can index a realistic corpus behind a trained query tower.

`python -m bench.corpus --fit --out bench/corpus_params.json` trains the reference model (a candidate
generator on a synthetic log, config in FIT_OVERRIDES) and writes the parameters;
`python -m bench.corpus --describe` prints the stored statistics against a generated corpus's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import tempfile
from typing import Any

import numpy as np

PARAMS_PATH = pathlib.Path(__file__).resolve().parent / "corpus_params.json"
QUANTILES = 101
FIT_OVERRIDES: dict[str, Any] = {
    "synthetic.num_users": 6000,
    "synthetic.num_items": 5000,
    "synthetic.events_per_user": 40,
    "retrieval.epochs": 4,
    "retrieval.eval_max_users": 500,
}
FIT_QUERIES = 20_000


@dataclasses.dataclass(frozen=True)
class CorpusParams:
    """The fitted statistics (all in the reference model's item principal axes).

    Attributes:
        dim: embedding size d.
        item_mean: [d] mean item embedding.
        item_std: [d] item standard deviations along the principal axes, largest first (the spectrum).
        item_norm_quantiles: [QUANTILES] quantiles 0..1 of the item embedding norms.
        query_mean: [d] mean query embedding.
        query_cholesky: [d, d] lower-triangular factor of the query covariance.
        query_norm_quantiles: [QUANTILES] quantiles 0..1 of the query embedding norms.
        source: how the reference model was trained.
    """

    dim: int
    item_mean: np.ndarray
    item_std: np.ndarray
    item_norm_quantiles: np.ndarray
    query_mean: np.ndarray
    query_cholesky: np.ndarray
    query_norm_quantiles: np.ndarray
    source: str

    def to_json(self) -> dict[str, Any]:
        return {field.name: _listed(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CorpusParams:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in document]
        if missing:
            raise ValueError(f"corpus parameters lack {', '.join(missing)}")
        arrays = {f.name: np.asarray(document[f.name], np.float64) for f in dataclasses.fields(cls)
                  if f.name not in ("dim", "source")}
        params = cls(dim=int(document["dim"]), source=str(document["source"]), **arrays)
        d = params.dim
        shapes = {"item_mean": (d,), "item_std": (d,), "query_mean": (d,), "query_cholesky": (d, d),
                  "item_norm_quantiles": (QUANTILES,), "query_norm_quantiles": (QUANTILES,)}
        for name, shape in shapes.items():
            if getattr(params, name).shape != shape:
                raise ValueError(f"corpus parameter {name}: expected shape {shape}, got {getattr(params, name).shape}")
        return params


@dataclasses.dataclass(frozen=True)
class Frame:
    """Where generated embeddings are placed: x = mean + (y - ref_mean) @ axes.T * scale.

    Attributes:
        mean: [d] the target model's mean item embedding.
        axes: [d, d] its item principal axes as columns, largest variance first.
        scale: its total item standard deviation over the reference's.
    """

    mean: np.ndarray
    axes: np.ndarray
    scale: float


def _listed(value: Any) -> Any:
    return np.round(value, 6).tolist() if isinstance(value, np.ndarray) else value


def load_params(path: pathlib.Path = PARAMS_PATH) -> CorpusParams:
    """The stored parameters. Raises ValueError naming the file when it is missing or malformed."""
    if not path.is_file():
        raise ValueError(f"no corpus parameters at {path}; run `python -m bench.corpus --fit --out {path}`")
    try:
        return CorpusParams.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def fit(items: np.ndarray, queries: np.ndarray, source: str) -> CorpusParams:
    """The statistics of trained embeddings.

    Args:
        items: [M, d] item embeddings of a trained model.
        queries: [Q, d] its query tower's outputs on real requests.
        source: a description of the model.
    """
    items = np.asarray(items, np.float64)
    queries = np.asarray(queries, np.float64)
    mean = items.mean(axis=0)
    _, singular, vt = np.linalg.svd(items - mean, full_matrices=False)
    to_axes = vt.T  # columns: principal axes
    item_coords = items @ to_axes
    query_coords = queries @ to_axes
    query_cov = np.cov(query_coords, rowvar=False) + 1e-9 * np.eye(items.shape[1])
    levels = np.linspace(0.0, 1.0, QUANTILES)
    return CorpusParams(
        dim=items.shape[1],
        item_mean=item_coords.mean(axis=0),
        item_std=singular / np.sqrt(len(items)),
        item_norm_quantiles=np.quantile(np.linalg.norm(items, axis=1), levels),
        query_mean=query_coords.mean(axis=0),
        query_cholesky=np.linalg.cholesky(query_cov),
        query_norm_quantiles=np.quantile(np.linalg.norm(queries, axis=1), levels),
        source=source,
    )


def generate(params: CorpusParams, n: int, seed: int, frame: Frame | None = None) -> np.ndarray:
    """`n` item embeddings [n, d] float32 (seeded); in the reference frame unless `frame` is given."""
    rng = np.random.default_rng(seed)
    raw = params.item_mean + rng.standard_normal((n, params.dim), dtype=np.float32) * params.item_std
    return _placed(_with_norms(raw, params.item_norm_quantiles), params, frame)


def generate_queries(params: CorpusParams, n: int, seed: int, frame: Frame | None = None) -> np.ndarray:
    """`n` query embeddings [n, d] float32 (seeded, independent of the items' draw)."""
    rng = np.random.default_rng([seed, 1])
    raw = params.query_mean + rng.standard_normal((n, params.dim)) @ params.query_cholesky.T
    return _placed(_with_norms(raw, params.query_norm_quantiles), params, frame)


def frame_of(embeddings: np.ndarray, params: CorpusParams) -> Frame:
    """The frame of another model's item embeddings [M, d] (M >= d): its mean, principal axes and scale."""
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2 or embeddings.shape[1] != params.dim:
        raise ValueError(f"embeddings: expected shape [M, {params.dim}], got {list(embeddings.shape)}")
    mean = embeddings.mean(axis=0)
    _, singular, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    scale = float(np.sqrt((singular**2).sum() / len(embeddings)) / np.sqrt((params.item_std**2).sum()))
    return Frame(mean, vt.T, scale)


def _with_norms(raw: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Rows of `raw` rescaled so that the norm of rank r takes quantile r / (n - 1) of `quantiles`."""
    norms = np.linalg.norm(raw, axis=1)
    ranks = np.empty(len(raw))
    ranks[np.argsort(norms, kind="stable")] = np.linspace(0.0, 1.0, len(raw)) if len(raw) > 1 else 0.5
    target = np.interp(ranks, np.linspace(0.0, 1.0, len(quantiles)), quantiles)
    return raw * (target / np.maximum(norms, 1e-12))[:, None]


def _placed(coords: np.ndarray, params: CorpusParams, frame: Frame | None) -> np.ndarray:
    if frame is None:
        return coords.astype(np.float32)
    return (frame.mean + (coords - params.item_mean) @ frame.axes.T * frame.scale).astype(np.float32)


def spectrum(embeddings: np.ndarray) -> np.ndarray:
    """Standard deviations [d] of the centred embeddings along their principal axes, largest first."""
    centred = np.asarray(embeddings, np.float64) - np.mean(embeddings, axis=0)
    return np.linalg.svd(centred, compute_uv=False) / np.sqrt(len(centred))


def describe(params: CorpusParams) -> str:
    """One line: the corpus a figure was measured on."""
    top = params.item_std[:3] / params.item_std[0]
    norms = params.item_norm_quantiles
    return (f"realistic corpus (bench/corpus.py): d={params.dim}, item spectrum and norm spread fitted from "
            f"{params.source}; spectrum top-3 relative {np.round(top, 2).tolist()}, item norm p5/p50/p95 "
            f"{norms[5]:.2f}/{norms[50]:.2f}/{norms[95]:.2f}")


def train_reference() -> tuple[np.ndarray, np.ndarray, str]:
    """Trains the reference candidate generator; returns its item embeddings, query embeddings and description."""
    from trainer.config import load_config
    from trainer.data.bundle import prepare
    from trainer.retrieval.export import sample_requests
    from trainer.retrieval.model import embed_queries
    from trainer.retrieval.train import train_retrieval
    from trainer.run import RunContext

    config = load_config(None, FIT_OVERRIDES)
    data = prepare(config)
    with tempfile.TemporaryDirectory() as folder:
        trained = train_retrieval(config, data, RunContext(pathlib.Path(folder) / "run"))
    queries = embed_queries(trained.model.query_tower, sample_requests(data, limit=FIT_QUERIES))
    recall = trained.metrics.get("recall@100")
    quality = f"; test recall@100 {recall:.3f}" if isinstance(recall, float) else ""
    source = f"a two-tower candidate generator trained on a synthetic log ({FIT_OVERRIDES}){quality}"
    return trained.item_embeddings, queries, source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="train the reference model and write --out")
    parser.add_argument("--out", type=pathlib.Path, default=PARAMS_PATH)
    parser.add_argument("--describe", action="store_true", help="stored statistics against a generated corpus's")
    args = parser.parse_args(argv)
    if args.fit:
        items, queries, source = train_reference()
        args.out.write_text(json.dumps(fit(items, queries, source).to_json(), indent=1) + "\n")
        print(f"wrote {args.out}")
    params = load_params(args.out)
    generated = generate(params, 100_000, seed=0)
    print(describe(params))
    print("spectrum fitted  ", np.round(params.item_std, 3).tolist())
    print("spectrum generated", np.round(spectrum(generated), 3).tolist())
    print("norm quantiles fitted   ", np.round(params.item_norm_quantiles[::10], 3).tolist())
    print("norm quantiles generated",
          np.round(np.quantile(np.linalg.norm(generated, axis=1), np.linspace(0, 1, 11)), 3).tolist())


if __name__ == "__main__":
    main()
