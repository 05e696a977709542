"""The ranking stage end to end: train_ranking with a real retrieval model, export, reload, serve.

The expected outputs are computed apart from the export's signature: the logits of the in-memory Keras
model fed directly, then sigmoid and exp(logit) * unit * sampling rate in NumPy, with the unit and the
sampling rate computed from the training events (trainer.ranking.loss's definitions written out).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from recsys_common import contract
from trainer.export.layout import read_metadata, read_warmup_requests
from trainer.ranking.train import score
from trainer.retrieval.servability import custom_ops

RUNNER = pathlib.Path(__file__).with_name("fresh_session_runner.py")
UNKNOWN = "never-seen-item"
# The signature as clients read it from the metadata (contract.py, written out by hand).
STRING_INPUT = {"dtype": "string", "rank": 1, "default": ""}
INPUTS = {
    "user_id": STRING_INPUT, "watch_history": {**STRING_INPUT, "rank": 2},
    "search_history": {**STRING_INPUT, "rank": 2},
    "gender": STRING_INPUT, "occupation": STRING_INPUT, "region": STRING_INPUT,
    "age": {"dtype": "int64", "rank": 1, "default": 0}, "request_time": {"dtype": "int64", "rank": 1, "default": 0},
    "candidate_ids": {**STRING_INPUT, "rank": 2},
}
OUTPUTS = {"scores": {"dtype": "float32", "rank": 2, "default": 0.0},
           "expected_watch_time": {"dtype": "float32", "rank": 2, "default": 0.0}}


def defaults_request(batch: int) -> dict[str, np.ndarray]:
    """Every user input at its default, by hand: unknown ids, one empty history slot, age and time 0."""
    empty = np.full(batch, "", dtype=object)
    return {"user_id": empty, "watch_history": empty[:, None], "search_history": empty[:, None], "gender": empty,
            "occupation": empty, "region": empty, "age": np.zeros(batch, np.int64),
            "request_time": np.zeros(batch, np.int64)}


@pytest.fixture(scope="module")
def calibration(data, config) -> tuple[float, float]:
    """(unit, sampling rate) from the training events in NumPy.

    unit = mean training watch time; rate = mean over training rows of n / P_u, P_u = the number of
    training items the row's user has not watched in training.
    """
    train = data.split.train
    unit = float(np.nanmean(train["watch_time"].to_numpy(dtype=np.float64)))
    items = set(train["item_id"].astype(str))
    watched = train.groupby("user_id")["item_id"].nunique()
    pool = (len(items) - watched.loc[train["user_id"]]).to_numpy(dtype=np.float64)
    return unit, float(np.mean(config.ranking.num_negatives / pool))


def expected_outputs(ranking_result, calibration, request: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, expected_watch_time) [B, N]: the Keras model's logits, then sigmoid and calibrated odds in NumPy."""
    model = ranking_result.model
    tensors = {key: tf.constant(np.asarray(request[key]).astype(object) if np.asarray(request[key]).dtype.kind in "OSU"
                                else np.asarray(request[key], dtype=np.int64)) for key in model.feature_keys}
    logits = model(tensors, training=False).numpy().astype(np.float64)
    padding = np.asarray(request[contract.CANDIDATE_IDS]).astype(str) == ""
    unit, rate = calibration
    return (np.where(padding, 0.0, 1.0 / (1.0 + np.exp(-logits))),
            np.where(padding, 0.0, np.exp(logits) * unit * rate))


@pytest.fixture(scope="module")
def request_batch(data) -> dict[str, np.ndarray]:
    """Four real test contexts (one made an unknown user) with catalogue, unknown and padding candidates."""
    rows = slice(0, 4)
    request = {spec.name: np.asarray(data.test_examples[spec.name][rows])
               for spec in contract.USER_INPUTS}
    request[contract.USER_ID] = request[contract.USER_ID].copy()
    request[contract.USER_ID][3] = "a-user-nobody-knows"
    catalogue = np.asarray(data.catalog.item_ids[:5], dtype=object)
    request[contract.CANDIDATE_IDS] = np.array([[*catalogue, UNKNOWN, ""]] * 4, dtype=object)
    return request


@pytest.fixture(scope="module")
def reloaded_outputs(exported, request_batch) -> tuple[np.ndarray, np.ndarray]:
    """(scores, expected_watch_time) of the request from the SavedModel loaded back."""
    served = tf.saved_model.load(str(exported)).signatures[contract.SIGNATURE_NAME](
        **{name: tf.constant(value) for name, value in request_batch.items()})
    return served[contract.SCORES].numpy(), served[contract.EXPECTED_WATCH_TIME].numpy()


def test_train_ranking_records_metrics_and_the_comparison_table(ranking_result, run_folder, config):
    names = [row["model"] for row in ranking_result.comparison]
    assert names == ["itempop", "neumf_pretrained", "full"]
    assert json.loads((run_folder.root / "ranking_comparison.json").read_text()) == ranking_result.comparison
    table = (run_folder.root / "ranking_comparison.md").read_text()
    assert all(f"| {name} |" in table for name in names)
    recorded = run_folder.metrics()["ranking"]
    assert recorded == pytest.approx(ranking_result.metrics)
    for key in ("test_hr@10", "test_ndcg@10", "test_auc", "test_weighted_per_user_loss", "test_recall@10",
                "retrieval_only_recall@10", "two_stage_recall@10", "two_stage_candidate_recall"):
        assert 0.0 <= recorded[key] <= 1.0, key
    assert recorded["two_stage_recall@10"] <= recorded["two_stage_candidate_recall"] + 1e-9
    assert "retrieval_score" in ranking_result.model.features.continuous_names
    assert (run_folder.root / "checkpoints" / "ranking" / "temporal" / "full" / "backup").is_dir()


def test_recorded_sampled_test_metrics_are_those_of_the_models_logits(ranking_result, temporal):
    """HR@10, NDCG@10 and AUC of the held-out item (candidate 0) among its sampled negatives, in NumPy."""
    inputs = temporal.test.inputs
    logits = ranking_result.model({key: tf.constant(inputs[key]) for key in ranking_result.model.feature_keys},
                                  training=False).numpy().astype(np.float64)
    positive, negatives = logits[:, :1], logits[:, 1:]
    ranks = (negatives >= positive).sum(axis=1)
    wins = (negatives < positive).sum(axis=1) + 0.5 * (negatives == positive).sum(axis=1)
    auc = np.mean(wins / negatives.shape[1])
    recorded, one_user = ranking_result.metrics, 1.5 / len(ranks)  # a near-tie may flip between batchings
    assert recorded["test_hr@10"] == pytest.approx(np.mean(ranks < 10), abs=one_user)
    ndcg = np.mean(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0.0))
    assert recorded["test_ndcg@10"] == pytest.approx(ndcg, abs=one_user)
    assert recorded["test_auc"] == pytest.approx(auc, abs=one_user / negatives.shape[1])
    assert auc > 0.6  # the planted structure is learnt


def test_reloaded_savedmodel_scores_are_sigmoid_and_calibrated_odds_of_the_logits(
        reloaded_outputs, ranking_result, request_batch, calibration):
    scores, watch_time = reloaded_outputs
    expected_scores, expected_watch_time = expected_outputs(ranking_result, calibration, request_batch)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(watch_time, expected_watch_time, rtol=1e-4, atol=1e-6)
    # the in-memory scoring function answers alike
    in_memory = score(ranking_result, request_batch)
    np.testing.assert_allclose(in_memory[0], expected_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(in_memory[1], expected_watch_time, rtol=1e-4, atol=1e-6)


def test_the_unit_and_sampling_rate_are_those_of_the_training_events(ranking_result, exported, calibration):
    unit, rate = calibration
    metadata = read_metadata(exported)
    assert ranking_result.watch_time_unit == pytest.approx(unit, rel=1e-6)
    assert metadata["watch_time_unit"] == pytest.approx(unit, rel=1e-6)
    assert ranking_result.sampling_rate == pytest.approx(rate, rel=1e-9)
    assert metadata["sampling_rate"] == pytest.approx(rate, rel=1e-9)
    assert 0 < rate < 1


def test_outputs_are_probability_and_odds_times_the_unit(reloaded_outputs, calibration):
    scores, watch_time = reloaded_outputs
    real = scores[:, :-1]
    assert ((real > 0) & (real < 1)).all() and np.isfinite(watch_time).all()
    # sigmoid(z) = p and exp(z) = p / (1 - p): both outputs come from one logit
    unit, rate = calibration
    np.testing.assert_allclose(watch_time[:, :-1], unit * rate * real / (1 - real), rtol=1e-4)
    np.testing.assert_array_equal(scores[:, -1], 0.0)
    np.testing.assert_array_equal(watch_time[:, -1], 0.0)
    # the unknown user and the unknown item are scored like any other
    assert len(np.unique(np.round(scores[:, :5], 6))) > 5
    assert (real[:, 5] > 0).all() and (real[3] > 0).all()


def test_a_fresh_tf_serving_style_session_answers_alike(exported, ranking_result, request_batch, calibration, config,
                                                         tmp_path):
    request_path, output_path = tmp_path / "request.npz", tmp_path / "out.npz"
    np.savez(request_path, **{name: value.astype(str) if value.dtype == object else value
                              for name, value in request_batch.items()})
    completed = subprocess.run([sys.executable, str(RUNNER), str(exported), str(request_path), str(output_path)],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    served = np.load(output_path)
    scores, watch_time = expected_outputs(ranking_result, calibration, request_batch)
    np.testing.assert_allclose(served[contract.SCORES], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served[contract.EXPECTED_WATCH_TIME], watch_time, rtol=1e-4, atol=1e-6)
    logs = read_warmup_requests(exported)
    assert len(logs) == config.export.warmup_requests
    for i, log in enumerate(logs):
        inputs = {key: tf.make_ndarray(proto) for key, proto in log.predict_log.request.inputs.items()}
        expected, expected_watch = expected_outputs(ranking_result, calibration, inputs)
        np.testing.assert_allclose(served[f"warmup/{i}/{contract.SCORES}"], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[f"warmup/{i}/{contract.EXPECTED_WATCH_TIME}"], expected_watch,
                                   rtol=1e-4, atol=1e-6)


def test_warmup_requests_are_real_test_contexts_ranking_catalogue_items(exported, config, data):
    logs = read_warmup_requests(exported)
    assert len(logs) == config.export.warmup_requests
    catalogue = set(np.asarray(data.catalog.item_ids).astype(str))
    contexts = {tuple(str(data.test_examples[name][row]) for name in (contract.USER_ID, contract.REQUEST_TIME))
                for row in range(len(data.test_examples[contract.USER_ID]))}
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == contract.RANKING
        assert request.model_spec.signature_name == contract.SIGNATURE_NAME
        assert set(request.inputs) == set(INPUTS)
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        candidates = inputs[contract.CANDIDATE_IDS].astype(str)
        assert candidates.shape == (1, config.export.max_k)
        assert len(set(candidates[0])) == config.export.max_k and set(candidates[0]) <= catalogue
        user = (inputs[contract.USER_ID].astype(str)[0], str(inputs[contract.REQUEST_TIME][0]))
        assert user in contexts


def test_export_uses_stock_ops_and_records_its_metadata(exported, run_folder, data, config):
    assert custom_ops(exported) == set()
    assert exported.name == "1"
    metadata = read_metadata(exported)
    assert metadata["signature_name"] == "serving_default"
    assert metadata["inputs"] == INPUTS and list(metadata["inputs"]) == list(INPUTS)
    assert metadata["outputs"] == OUTPUTS
    assert metadata["model"] == "ranking" and metadata["ranking_model"] == config.ranking.model == "full"
    dataset, train = data.dataset, data.split.train
    training_items = set(train["item_id"].astype(str))
    genres = {genre for item, item_genres in zip(dataset.items["item_id"].astype(str), dataset.items["genres"])
              if item in training_items for genre in item_genres}
    times = train["timestamp"].to_numpy()
    assert {key: metadata["data"][key] for key in ("events", "users", "items", "num_users", "num_items",
                                                   "num_catalog_items", "num_genres", "t_max", "t_span")} == {
        "events": len(dataset.events), "users": dataset.users["user_id"].nunique(),
        "items": dataset.items["item_id"].nunique(), "num_users": train["user_id"].nunique(),
        "num_items": len(training_items), "num_catalog_items": len(data.catalog.item_ids), "num_genres": len(genres),
        "t_max": int(times.max()), "t_span": int(times.max() - times.min())}
    assert metadata["metrics"] == pytest.approx(run_folder.metrics()["ranking"])
    assert [row["model"] for row in metadata["comparison"]] == ["itempop", "neumf_pretrained", "full"]
    assert metadata["config"]["num_negatives"] == config.ranking.num_negatives


def test_a_model_reading_no_ranking_only_input_keeps_the_signature_without_them(exported):
    """A client built before the ranking-only inputs existed sends exactly these, and TF Serving takes no more."""
    saved_model = saved_model_pb2.SavedModel.FromString((exported / "saved_model.pb").read_bytes())
    signature = saved_model.meta_graphs[0].signature_def[contract.SIGNATURE_NAME]
    assert set(signature.inputs) == set(INPUTS) == {spec.name for spec in contract.USER_INPUTS} | {"candidate_ids"}
    assert not signature.defaults


@pytest.mark.parametrize(("change", "message"), [
    ({contract.CANDIDATE_IDS: None}, "has no 'candidate_ids'"),
    ({contract.CANDIDATE_IDS: np.zeros((4, 3))}, "'candidate_ids' must hold strings"),
    ({contract.AGE: np.array(["30"] * 4, dtype=object)}, "'age' must hold integers"),
    ({contract.WATCH_HISTORY: np.array(["a"] * 4, dtype=object)}, r"'watch_history' must have rank 2"),
    ({contract.GENDER: np.array(["F"] * 3, dtype=object)}, "'gender' has batch size 3"),
    ({"watch_minutes": np.zeros(4)}, r"unknown input\(s\) \['watch_minutes'\]"),
])
def test_bad_requests_name_the_input(ranking_result, request_batch, change, message):
    request = {**request_batch, **change}
    request = {key: value for key, value in request.items() if value is not None}
    with pytest.raises(ValueError, match=message):
        score(ranking_result, request)


def test_missing_user_inputs_take_their_defaults(ranking_result, request_batch, exported, calibration):
    candidates = {contract.CANDIDATE_IDS: request_batch[contract.CANDIDATE_IDS]}
    explicit = {**defaults_request(4), **candidates}
    scores, watch_time = score(ranking_result, candidates)
    expected_scores, expected_watch_time = expected_outputs(ranking_result, calibration, explicit)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(watch_time, expected_watch_time, rtol=1e-4, atol=1e-6)
    # a client filling the gaps from the metadata's defaults gets the same answer from the SavedModel
    inputs = read_metadata(exported)["inputs"]
    filled = {name: np.full((4, 1) if spec["rank"] == 2 else 4, spec["default"],
                            dtype=object if spec["dtype"] == "string" else np.int64)
              for name, spec in inputs.items() if name != contract.CANDIDATE_IDS}
    served = tf.saved_model.load(str(exported)).signatures[contract.SIGNATURE_NAME](
        **{name: tf.constant(value) for name, value in {**filled, **candidates}.items()})
    np.testing.assert_allclose(served[contract.SCORES].numpy(), expected_scores, rtol=1e-5, atol=1e-6)


def test_expected_watch_time_is_calibrated_for_the_sampled_negatives(ranking_result, temporal, data):
    """Summed over the items a user has not watched, expected_watch_time is the watch time of their next watch.

    The synthetic logs' watch times are drawn from the planted model, so the test period's mean watch time
    per watch is the ground truth; without the calibration the sum is P_u / num_negatives (~40) times larger.
    """
    full = temporal.full_ranking
    vocabulary = np.asarray(ranking_result.space.vocab.item_ids, dtype=object)
    users = range(min(len(full), 60))
    candidates = np.array([[item if item not in full.exclude[u] else "" for item in vocabulary] for u in users],
                          dtype=object)
    contexts = {name: values[:len(candidates)] for name, values in full.contexts.items()}
    _, watch_time = score(ranking_result, {**contexts, contract.CANDIDATE_IDS: candidates})
    per_watch = float(np.nanmean(data.split.test["watch_time"].to_numpy(dtype=np.float64)))
    ratio = float(watch_time.sum(axis=1).mean()) / per_watch
    assert 0.5 < ratio < 2.0, ratio
    assert 0 < ranking_result.sampling_rate < 1
