"""Vocabularies: built from the training split only; lookups agree with the models' StringLookup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer.data.schema import DataError, validate_events, validate_items, validate_users
from trainer.data.vocab import OOV_INDEX, PAD_INDEX, Vocabularies, tokenize

TRAIN = validate_events(pd.DataFrame({
    "user_id": ["u1", "u2", "u2", "u3", "u3", "u3"],
    "item_id": ["b", "a", "b", "c", "b", "a"],
    "timestamp": [1, 2, 3, 4, 5, 6],
    "query": [None, "Red car", "red", None, "jazz!", None],
}), "train")
USERS = validate_users(pd.DataFrame({
    "user_id": ["u1", "u2", "u3", "u9"],
    "gender": ["F", "M", "M", "X"],  # u9 is not in training: its values must not enter the vocabulary
    "occupation": ["", "dev", "art", "pilot"],
    "region": ["9", "9", "1", "5"],
}), "users")
ITEMS = validate_items(pd.DataFrame({
    "item_id": ["a", "b", "c", "z"],
    "title": ["Red Car (1999)", "Blue car", "", "Zebra"],
    "genres": [["Drama"], ["Drama", "Comedy"], [], ["Horror"]],
}), "items")


@pytest.fixture(scope="module")
def vocab() -> Vocabularies:
    return Vocabularies.from_training(TRAIN, USERS, ITEMS)


def test_vocabularies_come_from_training_and_sort_by_frequency(vocab: Vocabularies) -> None:
    assert vocab.user_ids == ("u3", "u2", "u1")
    assert vocab.item_ids == ("b", "a", "c")  # b: 3 events, a: 2, c: 1; z never trained
    assert vocab.genders == ("M", "F")
    assert vocab.occupations == ("art", "dev")  # "" is never a vocabulary entry
    assert vocab.regions == ("9", "1")
    assert vocab.genres == ("Drama", "Comedy")
    assert vocab.title_tokens == ("car", "1999", "blue", "red")  # ties sorted by value
    assert vocab.query_tokens == ("red", "car", "jazz")


def test_lookup_reserves_padding_and_oov(vocab: Vocabularies) -> None:
    codes = vocab.lookup("item_ids", np.array([["b", "", "z"], ["c", "a", "never"]], dtype=object))
    np.testing.assert_array_equal(codes, [[2, PAD_INDEX, OOV_INDEX], [4, 3, OOV_INDEX]])
    assert vocab.size("item_ids") == 5
    with pytest.raises(DataError, match="unknown vocabulary"):
        vocab.lookup("colours", ["x"])


def test_lookup_matches_keras_string_lookup(vocab: Vocabularies) -> None:
    import tensorflow as tf  # imported here (slow); `trainer` above already chose the Keras version

    layer = tf.keras.layers.StringLookup(vocabulary=list(vocab.item_ids), mask_token="", num_oov_indices=1)
    values = np.array(["a", "b", "c", "", "z", "zz", "b"], dtype=object)
    np.testing.assert_array_equal(layer(tf.constant(values)).numpy(), vocab.lookup("item_ids", values))
    assert layer.vocabulary_size() == vocab.size("item_ids")


def test_json_round_trip(vocab: Vocabularies) -> None:
    assert Vocabularies.from_json(vocab.to_json()) == vocab


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"user_ids": []}', "missing field"),
])
def test_from_json_rejects_malformed_input(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Vocabularies.from_json(text)


def test_empty_training_split_is_an_error() -> None:
    with pytest.raises(DataError, match="training split is empty"):
        Vocabularies.from_training(TRAIN.iloc[:0], USERS, ITEMS)


@pytest.mark.parametrize(("text", "tokens"), [
    ("Toy Story (1995)", ["toy", "story", "1995"]),
    ("  Café_au-lait!! ", ["café", "au", "lait"]),
    ("", []),
    (None, []),
    (float("nan"), []),
])
def test_tokenize(text: str | None, tokens: list[str]) -> None:
    assert tokenize(text) == tokens
