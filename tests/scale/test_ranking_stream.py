"""Ranking rows streamed from the TFRecord shards: every training example once per epoch, the watched item first,
negatives outside the user's training items, the watch-time weights, and the very rows of the in-memory path."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_common import contract
from trainer.data.examples import ITEM_ID, WATCH_TIME
from trainer.data.tfrecord import Manifest
from trainer.ranking.models import LABELS, WEIGHTS
from trainer.ranking.rows import (
    ExampleSource,
    InMemoryExamples,
    NegativeDraws,
    RowRecipe,
    StreamedExamples,
    TrainingRows,
)

from .conftest import as_numpy, concat_batches

NEGATIVES, BATCH, UNIT, SEED = 3, 128, 50.0, 11
KEYS = (contract.USER_ID, contract.WATCH_HISTORY, contract.REQUEST_TIME, contract.CANDIDATE_IDS)


def recipe(examples: dict[str, np.ndarray], items: list[str], seed: int = SEED) -> RowRecipe:
    seen: dict[str, set[str]] = {}
    for user, item in zip(examples[contract.USER_ID], examples[ITEM_ID], strict=True):
        seen.setdefault(user, set()).add(item)
    negatives = NegativeDraws(items, {user: frozenset(watched) for user, watched in seen.items()}, NEGATIVES, seed)
    return RowRecipe(negatives, KEYS, UNIT)


def training_rows(examples: ExampleSource, recipe: RowRecipe) -> TrainingRows:
    import tensorflow as tf

    return TrainingRows(examples, recipe, tf.distribute.get_strategy(), BATCH)


def epoch_rows(rows: TrainingRows, epoch: int) -> tuple[dict[str, np.ndarray], int, int]:
    import tensorflow as tf

    dataset = tf.distribute.get_strategy().distribute_datasets_from_function(rows.dataset(epoch, epoch + 1))
    batches = [as_numpy(batch) for batch in dataset]
    return concat_batches(batches), rows.steps, len(batches)


@pytest.fixture(scope="module")
def manifest_examples(tiny_prepared: Manifest) -> dict[str, np.ndarray]:
    return concat_batches([as_numpy(batch) for batch in tiny_prepared.read("train", 1000)])


def stream(manifest: Manifest, examples: dict[str, np.ndarray], seed: int = SEED) -> TrainingRows:
    return training_rows(StreamedExamples(manifest, seed), recipe(examples, list(manifest.vocab.item_ids), seed))


@pytest.fixture(scope="module")
def first_epoch(tiny_prepared: Manifest, manifest_examples) -> tuple[dict[str, np.ndarray], int, int]:
    return epoch_rows(stream(tiny_prepared, manifest_examples), 0)


def event_keys(rows: dict[str, np.ndarray]) -> list[str]:
    """user|request time|watched item of every row."""
    return [f"{u}|{t}|{i}" for u, t, i in zip(rows[contract.USER_ID], rows[contract.REQUEST_TIME], rows[ITEM_ID])]


def row_keys(rows: dict[str, np.ndarray]) -> list[str]:
    """user|request time|watched item of every training row (the watched item is candidate 0)."""
    return event_keys({**rows, ITEM_ID: rows[contract.CANDIDATE_IDS][:, 0]})


def test_an_epoch_reads_every_training_example_once(first_epoch, manifest_examples, tiny_prepared: Manifest) -> None:
    rows, steps, batches = first_epoch
    total = tiny_prepared.examples("train")
    assert batches == steps == -(-total // BATCH)
    assert rows[contract.CANDIDATE_IDS].shape == (total, 1 + NEGATIVES)
    streamed = {contract.USER_ID: rows[contract.USER_ID], contract.REQUEST_TIME: rows[contract.REQUEST_TIME],
                ITEM_ID: rows[contract.CANDIDATE_IDS][:, 0]}
    assert sorted(event_keys(streamed)) == sorted(event_keys(manifest_examples))


def test_negatives_avoid_the_users_training_items_and_come_from_the_vocabulary(first_epoch, manifest_examples,
                                                                              tiny_prepared: Manifest) -> None:
    rows = first_epoch[0]
    vocabulary = set(tiny_prepared.vocab.item_ids)
    watched = {user: set(manifest_examples[ITEM_ID][manifest_examples[contract.USER_ID] == user])
               for user in set(manifest_examples[contract.USER_ID])}
    for user, candidates in zip(rows[contract.USER_ID], rows[contract.CANDIDATE_IDS], strict=True):
        negatives = set(candidates[1:])
        assert negatives <= vocabulary
        assert not negatives & watched[user]


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


def test_negatives_are_drawn_afresh_every_epoch_and_reproducibly(first_epoch, tiny_prepared: Manifest,
                                                                  manifest_examples) -> None:
    ordered = first_epoch[0][contract.CANDIDATE_IDS][np.argsort(row_keys(first_epoch[0]), kind="stable")]
    for epoch, same in ((0, True), (1, False)):
        again = epoch_rows(stream(tiny_prepared, manifest_examples), epoch)[0]
        candidates = again[contract.CANDIDATE_IDS][np.argsort(row_keys(again), kind="stable")]
        np.testing.assert_array_equal(candidates[:, 0], ordered[:, 0])
        assert np.array_equal(candidates, ordered) == same


@pytest.mark.parametrize("epoch", [0, 2])
def test_in_memory_and_streamed_examples_give_identical_rows(tiny_prepared: Manifest, manifest_examples,
                                                            epoch: int) -> None:
    """The same examples, one from memory and one from the shards, in different orders: the same rows."""
    rows_recipe = recipe(manifest_examples, list(tiny_prepared.vocab.item_ids))
    in_memory = epoch_rows(training_rows(InMemoryExamples(manifest_examples, rows_recipe.example_keys, SEED),
                                         rows_recipe), epoch)[0]
    streamed = epoch_rows(training_rows(StreamedExamples(tiny_prepared, SEED), rows_recipe), epoch)[0]
    assert not np.array_equal(in_memory[contract.USER_ID], streamed[contract.USER_ID])  # read in other orders
    assert sorted(in_memory) == sorted(streamed) == sorted([*KEYS, LABELS, WEIGHTS])
    by_memory, by_stream = np.argsort(row_keys(in_memory)), np.argsort(row_keys(streamed))
    for name in in_memory:
        np.testing.assert_array_equal(in_memory[name][by_memory], streamed[name][by_stream], err_msg=name)
