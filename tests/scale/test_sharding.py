"""The sharded retrieval index: crc32 assignment, export per shard, and the client's merge over a real server."""

from __future__ import annotations

import binascii
from collections.abc import Iterator

import numpy as np
import pytest

from recsys_common import contract
from trainer.config import Config
from trainer.data.bundle import TrainingData
from trainer.export import layout
from trainer.export.server_configs import LOCAL_MODELS_CONFIG, SCANN_MODELS_CONFIG, write_server_configs
from trainer.retrieval.sharding import ShardingError, export_sharded_retrieval, shard_of, split_corpus

SHARDS = 3


def test_items_go_to_their_crc32_shard_whatever_the_corpus() -> None:
    ids = np.array([f"item-{i}" for i in range(200)] + ["é", "0"], dtype=object)
    expected = [binascii.crc32(item.encode("utf-8")) % 7 for item in ids]
    assert shard_of(ids, 7).tolist() == expected
    assert shard_of(ids[::-1], 7).tolist() == expected[::-1]  # an item's shard does not depend on the others
    assert np.bincount(shard_of(ids, 7)).min() > 10  # and the shards are balanced enough


def test_split_corpus_partitions_items_and_keeps_rows_aligned() -> None:
    ids = np.array([f"v{i}" for i in range(100)], dtype=object)
    embeddings = np.arange(200, dtype=np.float32).reshape(100, 2)
    shards = split_corpus(ids, embeddings, 4)
    assert sorted(item for shard_ids, _ in shards for item in shard_ids) == sorted(ids)
    for shard_ids, shard_embeddings in shards:
        rows = [int(item[1:]) for item in shard_ids]
        np.testing.assert_array_equal(shard_embeddings, embeddings[rows])


def test_impossible_splits_are_clear_errors() -> None:
    with pytest.raises(ShardingError, match="leave shard"):
        split_corpus(np.array(["a", "b"], dtype=object), np.zeros((2, 3), np.float32), 40)
    with pytest.raises(ShardingError, match="must be aligned"):
        split_corpus(np.array(["a", "b"], dtype=object), np.zeros((3, 3), np.float32), 2)
    with pytest.raises(ShardingError, match=">= 1"):
        shard_of(np.array(["a"]), 0)


@pytest.fixture(scope="module")
def sharded_export(tiny_config: Config, tiny_data: TrainingData, tiny_retrieval: object,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The unsharded retrieval export, its 3 shards and a synthetic ranking model, served by serving.server."""
    from bench.synthetic_models import export_synthetic_models, make_catalog
    from serving.testing import running_server
    from trainer.retrieval.export import export_retrieval

    base = tmp_path_factory.mktemp("saved_models")
    unsharded = export_retrieval(tiny_retrieval, tiny_data, tiny_config.export, base)  # type: ignore[arg-type]
    shards = export_sharded_retrieval(tiny_retrieval, tiny_data, tiny_config.export, base,  # type: ignore[arg-type]
                                      num_shards=SHARDS)
    export_synthetic_models(base, make_catalog(10, dim=4), (contract.RANKING,), k=5)
    models = [contract.RETRIEVAL, contract.RANKING, *shards]
    written = write_server_configs(base, models)
    with running_server(model_config_file=written[LOCAL_MODELS_CONFIG], wait_for=models, timeout=180) as server:
        yield {"base": base, "shards": shards, "unsharded": unsharded, "server": server, "written": written}


def test_every_shard_is_a_published_scann_model_over_its_items(sharded_export: dict, tiny_retrieval: object) -> None:
    sizes = []
    for index, (name, version) in enumerate(sorted(sharded_export["shards"].items())):
        assert name == contract.shard_model_name(index) and version.name == "1"
        metadata = layout.read_metadata(version)
        assert metadata["shard"]["index"] == index and metadata["shard"]["num_shards"] == SHARDS
        items = set(metadata[contract.METADATA_ITEM_TITLES])
        expected = {str(i) for i in tiny_retrieval.item_ids if shard_of(np.array([i]), SHARDS)[0] == index}
        assert items <= expected and metadata["index"]["num_items"] == len(expected)
        sizes.append(len(expected))
    assert sum(sizes) == len(tiny_retrieval.item_ids)  # type: ignore[attr-defined]
    scann_config = sharded_export["written"][SCANN_MODELS_CONFIG].read_text()
    assert all(f'name: "{contract.shard_model_name(i)}"' in scann_config for i in range(SHARDS))


def test_merged_shards_return_the_unsharded_top_k(sharded_export: dict, tiny_data: TrainingData,
                                                  tiny_retrieval: object) -> None:
    from serving.client import RecommenderClient
    from trainer.retrieval.export import sample_requests
    from trainer.retrieval.inference import retrieve

    requests = sample_requests(tiny_data, limit=12)
    k = layout.read_metadata(sharded_export["unsharded"][contract.RETRIEVAL])["k"]
    target = sharded_export["server"].grpc_target
    with RecommenderClient(target, retrieval_model=list(sharded_export["shards"])) as sharded, \
            RecommenderClient(target, retrieval_model=contract.RETRIEVAL) as whole:
        for row in range(len(requests[contract.USER_ID])):
            user = {name: values[row].tolist() if values.ndim == 2 else values[row]
                    for name, values in requests.items()}
            merged = {rec.item_id: rec.retrieval_score for rec in sharded.recommend(user, k=k)}
            unsharded = {rec.item_id: rec.retrieval_score for rec in whole.recommend(user, k=k)}
            assert merged == unsharded  # same items, bit-identical scores
            seen = set(user[contract.WATCH_HISTORY])
            ids, scores = retrieve(tiny_retrieval, {n: v[row:row + 1] for n, v in requests.items()}, k)  # NumPy
            exact = {i: s for i, s in zip(ids[0], scores[0]) if i not in seen}
            assert set(merged) == set(exact)
            np.testing.assert_allclose([merged[i] for i in exact], list(exact.values()), rtol=1e-4, atol=1e-5)
