"""The YouTube ranking features, computed in-graph, against values worked out by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from recsys_common import contract
from trainer.ranking.features import NEVER_SECONDS, NEVER_WATCHED, QuantileNormalizer, RankingFeatures

NEVER = NEVER_WATCHED
DAY = 86_400


def strings(rows: list) -> np.ndarray:
    return np.array(rows, dtype=object)


def tensors(request: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {name: tf.constant(value) for name, value in request.items()}


def raw_features(space, request) -> dict[str, np.ndarray]:
    layer = RankingFeatures(space, embedding_dim=4, num_quantiles=10)
    values = layer.continuous(tensors(request)).numpy()
    return {name: values[..., i] for i, name in enumerate(layer.continuous_names)}


def test_continuous_features_by_hand(hand_space, hand_request):
    features = raw_features(hand_space, hand_request)
    # user 1 watched a (g1) then b (g2, g1): g1 twice, g2 once, both last seen 0 watches ago, at day 350.
    # user 2 watched c, c, a: g2 twice (last 1 watch ago), g1 once (last 0 ago); unknown time -> t_max = day 400.
    np.testing.assert_array_equal(features["genre_watch_count"], [[2, 1, 0, 0], [0, 2, 1, 2]])
    np.testing.assert_array_equal(features["genre_positions_since"], [[0, 0, NEVER, NEVER], [NEVER, 0, 0, 1]])
    # example age (t_max - t) / t_span = 50 / 300 days; an unknown request time is a serving request: 0
    np.testing.assert_allclose(features["example_age"], [[50 / 300] * 4, [0.0] * 4], rtol=1e-6)
    # days since release: a 100, b 200, c unknown, d 300, "new-item" not in the catalogue
    np.testing.assert_allclose(features["item_age_days"], [[250, 0, 50, 0], [0, 200, 300, 0]])


def test_serving_time_example_age_is_zero(hand_space, hand_request):
    hand_request[contract.REQUEST_TIME] = np.array([500 * 86_400, 400 * 86_400], dtype=np.int64)
    np.testing.assert_array_equal(raw_features(hand_space, hand_request)["example_age"], np.zeros((2, 4)))


def test_an_empty_history_means_never_watched(hand_space, hand_request):
    hand_request[contract.WATCH_HISTORY] = np.zeros((2, 0), dtype=object)
    features = raw_features(hand_space, hand_request)
    np.testing.assert_array_equal(features["genre_watch_count"], np.zeros((2, 4)))
    np.testing.assert_array_equal(features["genre_positions_since"], np.full((2, 4), NEVER))


def test_features_the_data_lacks_are_left_out(hand_space, hand_request):
    bare = dataclasses.replace(hand_space, available=frozenset())
    layer = RankingFeatures(bare, embedding_dim=4, num_quantiles=10)
    assert layer.continuous_names == ("example_age",)
    assert layer.demographics == {} and layer.age_embedding is None and layer.genre_embedding is None
    full = RankingFeatures(hand_space, embedding_dim=4, num_quantiles=10)
    bare_width = layer(tensors(hand_request)).shape[-1]
    # 1 continuous x (x, x^2, sqrt x) + the watched-items embedding
    assert bare_width == 1 * 3 + 4
    # 4 continuous x 3 + release-known flag + gender, occupation, region, age, watched items, genres (4 each)
    assert full(tensors(hand_request)).shape[-1] == 4 * 3 + 1 + 6 * 4


def test_the_item_watch_count_that_serving_never_sees_is_not_a_feature(hand_space):
    # The client never ranks a watched item, so a count of the candidate in the history is always 0 in serving.
    assert "item_watch_count" not in RankingFeatures(hand_space, embedding_dim=4, num_quantiles=10).continuous_names


def test_unknown_watched_items_and_genres_are_left_out_of_the_means(hand_space, hand_request):
    layer = RankingFeatures(hand_space, embedding_dim=4, num_quantiles=10)
    layer(tensors(hand_request))
    # Distinct embedding rows, so a mean that took in the padding or out-of-vocabulary row would move.
    for embedding in (layer.history_embedding, layer.genre_embedding):
        rows = embedding.get_weights()[0].shape[0]
        embedding.set_weights([np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + 1.0])
    padded = dict(hand_request, **{contract.WATCH_HISTORY: strings([["", "", "a", "b"], ["", "c", "c", "a"]])})
    unknown = dict(hand_request, **{contract.WATCH_HISTORY: strings([["zz", "", "a", "b"], ["yy", "c", "c", "a"]])})
    np.testing.assert_allclose(layer(tensors(unknown)).numpy(), layer(tensors(padded)).numpy())
    # a, b, c have vocabulary rows 2, 3, 4: user 1 watched a, b -> mean of rows 2 and 3
    vector = layer(tensors(hand_request)).numpy()
    table = layer.history_embedding.get_weights()[0]
    watched_mean = (table[2] + table[3]) / 2
    assert any(np.allclose(vector[0, 0, i:i + 4], watched_mean) for i in range(vector.shape[-1] - 3))
    # candidate d has only g3, a genre outside the vocabulary: its genre mean is zeros, not the unknown row
    np.testing.assert_array_equal(vector[0, 2, -4:], np.zeros(4))


def test_normalised_features_enter_as_x_square_and_root(hand_space, hand_request):
    layer = RankingFeatures(hand_space, embedding_dim=4, num_quantiles=10)
    rng = np.random.default_rng(0)
    layer.normalizer.adapt(rng.uniform(0, 400, size=(200, len(layer.continuous_names))))
    vector = layer(tensors(hand_request)).numpy()
    count = len(layer.continuous_names)
    x, square, root = vector[..., :count], vector[..., count:2 * count], vector[..., 2 * count:3 * count]
    assert ((x >= 0) & (x < 1)).all()
    np.testing.assert_allclose(square, x ** 2, rtol=1e-6)
    np.testing.assert_allclose(root, np.sqrt(x), rtol=1e-6)


def test_quantile_normaliser_by_hand():
    normaliser = QuantileNormalizer(num_features=1, num_quantiles=4)
    normaliser.adapt(np.array([[0.0], [0.0], [0.0], [1.0], [2.0]]))  # knots 0, 0, 0, 1, 2
    values = np.array([-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 5.0], dtype=np.float32)[:, None]
    out = normaliser(tf.constant(values)).numpy()[:, 0]
    # below -> 0; the tie at 0 spans levels 0..2/4 -> its middle 1/4; 0.5 -> halfway 2/4..3/4; 1 -> 3/4;
    # 1.5 -> 7/8; the maximum and above -> just under 1
    below_one = np.nextafter(np.float32(1), np.float32(0))
    np.testing.assert_allclose(out, [0.0, 0.25, 0.625, 0.75, 0.875, below_one, below_one], rtol=1e-6)


def test_quantile_normaliser_is_the_empirical_cdf_per_feature():
    rng = np.random.default_rng(1)
    train = np.stack([rng.uniform(0, 10, 5000), rng.exponential(3.0, 5000)], axis=1)
    normaliser = QuantileNormalizer(num_features=2, num_quantiles=100)
    normaliser.adapt(train)
    probe = np.stack([rng.uniform(0, 10, 300), rng.exponential(3.0, 300)], axis=1).astype(np.float32)
    out = normaliser(tf.constant(probe[None])).numpy()[0]
    empirical = np.stack([(train[:, j][None, :] <= probe[:, j][:, None]).mean(axis=1) for j in range(2)], axis=1)
    np.testing.assert_allclose(out, empirical, atol=0.02)
    order = np.argsort(probe[:, 1])
    assert (np.diff(out[order, 1]) >= 0).all()


@pytest.mark.parametrize(("values", "message"), [
    (np.array([[1.0, np.nan]]), "NaN or infinity"),
    (np.zeros((3, 3)), r"expected \[R > 0, 2\]"),
    (np.zeros((0, 2)), r"expected \[R > 0, 2\]"),
])
def test_quantile_normaliser_rejects_bad_training_values(values, message):
    with pytest.raises(ValueError, match=message):
        QuantileNormalizer(num_features=2, num_quantiles=4).adapt(values)


def test_only_the_training_window_of_a_long_history_counts(hand_space, hand_request):
    # With history_length 2, older watches are as if absent: user 2's "c, c, a" counts as "c, a".
    windowed = dataclasses.replace(hand_space, history_length=2)
    long = dict(hand_request, **{contract.WATCH_HISTORY: strings([["d", "a", "b"], ["c", "c", "a"]])})
    short = dict(hand_request, **{contract.WATCH_HISTORY: strings([["", "a", "b"], ["", "c", "a"]])})
    features_long, features_short = raw_features(windowed, long), raw_features(windowed, short)
    for name in ("genre_watch_count", "genre_positions_since"):
        np.testing.assert_array_equal(features_long[name], features_short[name], err_msg=name)
    np.testing.assert_array_equal(features_long["genre_watch_count"], [[2, 1, 0, 0], [0, 1, 1, 1]])
    layer = RankingFeatures(windowed, embedding_dim=4, num_quantiles=10)
    np.testing.assert_allclose(layer(tensors(long)).numpy(), layer(tensors(short)).numpy(), rtol=1e-6)


@pytest.fixture()
def world_space(hand_space):
    """hand_space with channels (a, b on ch1; c on ch2; d none), languages and impressions."""
    catalog = dataclasses.replace(hand_space.catalog, channels=strings(["ch1", "ch1", "ch2", ""]),
                                  languages=strings(["en", "de", "en", ""]))
    return dataclasses.replace(hand_space, catalog=catalog,
                               available=hand_space.available | {"channel", "language", "impressions"})


@pytest.fixture()
def world_request(hand_request):
    """hand_request with watch times (user 1 watched a at day 300, b at day 340), impressions and languages."""
    return {**hand_request,
            contract.WATCH_HISTORY_TIMES: np.array([[0, 300 * DAY, 340 * DAY], [10 * DAY, 20 * DAY, 30 * DAY]]),
            contract.IMPRESSION_HISTORY: strings([["c", "d", "c", ""], ["", "", "", "zzz"]]),
            contract.LANGUAGE: strings(["en", ""])}


def test_channel_impression_and_language_features_by_hand(world_space, world_request):
    features = raw_features(world_space, world_request)
    # candidates: user 1 a (ch1), c (ch2), d (none), "" ; user 2 new-item, b (ch1), a (ch1), c (ch2)
    # user 1 watched a, b (both ch1); user 2 watched c, c, a
    np.testing.assert_array_equal(features["channel_watch_count"], [[2, 0, 0, 0], [0, 1, 1, 2]])
    # user 1's last ch1 watch is b at day 340, request at 350: 10 days; user 2's request time is unknown
    np.testing.assert_array_equal(features["channel_seconds_since"],
                                  [[10 * DAY, NEVER_SECONDS, NEVER_SECONDS, NEVER_SECONDS], [NEVER_SECONDS] * 4])
    # c was shown to user 1 twice; d once; an unknown id or a pad never counts
    np.testing.assert_array_equal(features["previous_impressions"], [[0, 2, 1, 0], [0, 0, 0, 0]])
    # user 1 speaks en: a en (1), c en (1), d unknown (0.5); user 2 unknown: 0.5
    np.testing.assert_array_equal(features["language_match"], [[1, 1, 0.5, 0.5], [0.5] * 4])


def test_a_request_without_watch_times_leaves_channel_recency_unknown(world_space, world_request):
    request = {**world_request, contract.WATCH_HISTORY_TIMES: np.zeros((2, 1), np.int64)}  # a client's default
    features = raw_features(world_space, request)
    np.testing.assert_array_equal(features["channel_seconds_since"], np.full((2, 4), NEVER_SECONDS))
    np.testing.assert_array_equal(features["channel_watch_count"], [[2, 0, 0, 0], [0, 1, 1, 2]])


def test_the_model_reads_only_the_ranking_inputs_its_data_has(hand_space, world_space):
    plain = RankingFeatures(hand_space, embedding_dim=4, num_quantiles=10)
    world = RankingFeatures(world_space, embedding_dim=4, num_quantiles=10)
    assert plain.context_inputs == ()
    assert set(world.context_inputs) == {spec.name for spec in contract.RANKING_CONTEXT_INPUTS}
