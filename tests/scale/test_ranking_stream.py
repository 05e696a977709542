"""Ranking rows streamed from the TFRecord shards: every training example once per epoch, the watched item first,
negatives outside the example's own items, and the watch-time weights of the in-memory path."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_common import contract
from trainer.data.examples import ITEM_ID, WATCH_TIME
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest
from trainer.ranking.models import LABELS, WEIGHTS
from trainer.ranking.streaming import NOT_IN_POOL, StreamedRows, draw_negatives

from .conftest import as_numpy, concat_batches

NEGATIVES, BATCH, UNIT, SEED = 3, 128, 50.0, 11
KEYS = (contract.USER_ID, contract.WATCH_HISTORY, contract.REQUEST_TIME, contract.CANDIDATE_IDS)


def stream(manifest: Manifest, seed: int = SEED) -> StreamedRows:
    import tensorflow as tf

    return StreamedRows(manifest, tf.distribute.get_strategy(), KEYS, list(manifest.vocab.item_ids), NEGATIVES,
                          BATCH, UNIT, seed)


def epoch_rows(rows: StreamedRows, epoch: int) -> tuple[dict[str, np.ndarray], int, int]:
    import tensorflow as tf

    dataset = tf.distribute.get_strategy().distribute_datasets_from_function(rows.dataset(epoch, epoch + 1))
    batches = [as_numpy(batch) for batch in dataset]
    return concat_batches(batches), rows.steps, len(batches)


@pytest.fixture(scope="module")
def first_epoch(tiny_prepared: Manifest) -> tuple[dict[str, np.ndarray], int, int]:
    return epoch_rows(stream(tiny_prepared), 0)


@pytest.fixture(scope="module")
def manifest_examples(tiny_prepared: Manifest) -> dict[str, np.ndarray]:
    return concat_batches([as_numpy(batch) for batch in tiny_prepared.read("train", 1000)])


def event_keys(rows: dict[str, np.ndarray]) -> list[str]:
    """user|request time|watched item of every row."""
    return [f"{u}|{t}|{i}" for u, t, i in zip(rows[contract.USER_ID], rows[contract.REQUEST_TIME], rows[ITEM_ID])]


def test_an_epoch_reads_every_training_example_once(first_epoch, manifest_examples, tiny_prepared: Manifest) -> None:
    rows, steps, batches = first_epoch
    total = tiny_prepared.examples("train")
    assert batches == steps == -(-total // BATCH)
    assert rows[contract.CANDIDATE_IDS].shape == (total, 1 + NEGATIVES)
    streamed = {contract.USER_ID: rows[contract.USER_ID], contract.REQUEST_TIME: rows[contract.REQUEST_TIME],
                ITEM_ID: rows[contract.CANDIDATE_IDS][:, 0]}
    assert sorted(event_keys(streamed)) == sorted(event_keys(manifest_examples))


def test_negatives_avoid_the_examples_own_items_and_come_from_the_vocabulary(first_epoch,
                                                                            tiny_prepared: Manifest) -> None:
    rows = first_epoch[0]
    vocabulary = set(tiny_prepared.vocab.item_ids)
    for candidates, history in zip(rows[contract.CANDIDATE_IDS], rows[contract.WATCH_HISTORY]):
        negatives = set(candidates[1:])
        assert negatives <= vocabulary
        assert not negatives & ({candidates[0]} | set(history))


def test_labels_and_weights_follow_the_watch_time(first_epoch, manifest_examples) -> None:
    rows = first_epoch[0]
    expected_labels = np.zeros((len(rows[LABELS]), 1 + NEGATIVES), np.float32)
    expected_labels[:, 0] = 1.0
    np.testing.assert_array_equal(rows[LABELS], expected_labels)
    np.testing.assert_array_equal(rows[WEIGHTS][:, 1:], 1.0)
    by_event = {(u, t, i): w for u, t, i, w in zip(manifest_examples[contract.USER_ID],
                                                   manifest_examples[contract.REQUEST_TIME],
                                                   manifest_examples[ITEM_ID], manifest_examples[WATCH_TIME])}
    watch_time = np.array([by_event[(u, t, c[0])] for u, t, c in zip(rows[contract.USER_ID],
                                                                      rows[contract.REQUEST_TIME],
                                                                      rows[contract.CANDIDATE_IDS])])
    expected = np.where(np.isfinite(watch_time), watch_time / UNIT, 1.0)
    np.testing.assert_allclose(rows[WEIGHTS][:, 0], expected, rtol=1e-6)


def test_negatives_are_drawn_afresh_every_epoch_and_reproducibly(first_epoch, tiny_prepared: Manifest) -> None:
    again = epoch_rows(stream(tiny_prepared), 0)[0]
    np.testing.assert_array_equal(again[contract.CANDIDATE_IDS], first_epoch[0][contract.CANDIDATE_IDS])
    second = epoch_rows(stream(tiny_prepared), 1)[0]
    assert (np.sort(second[contract.CANDIDATE_IDS][:, 0]) == np.sort(first_epoch[0][contract.CANDIDATE_IDS][:, 0])
            ).all()
    assert not np.array_equal(second[contract.CANDIDATE_IDS], first_epoch[0][contract.CANDIDATE_IDS])


def test_draws_are_uniform_outside_the_blocked_items() -> None:
    rng = np.random.default_rng(0)
    blocked = np.array([[0, 1, NOT_IN_POOL], [4, 4, 4]] * 2000, dtype=np.int64)
    draws = draw_negatives(blocked, 5, 5, rng)
    assert not np.isin(draws[0::2], [0, 1]).any() and not (draws[1::2] == 4).any()
    counts = np.bincount(draws[0::2].ravel(), minlength=5)[2:]  # 3 allowed items, 10,000 draws
    np.testing.assert_allclose(counts / counts.sum(), 1 / 3, atol=0.02)


def test_a_history_that_covers_the_vocabulary_is_refused() -> None:
    with pytest.raises(DataError, match="covers all 3 items"):
        draw_negatives(np.array([[0, 1, 2, NOT_IN_POOL]]), 1, 3, np.random.default_rng(0))
