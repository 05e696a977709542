"""The ranking stage end to end: train_ranking with a real retrieval model, export, reload, serve."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from recsys_common import contract
from trainer.export.layout import read_metadata, read_warmup_requests, signature_metadata
from trainer.ranking.train import score
from trainer.retrieval.servability import custom_ops

RUNNER = pathlib.Path(__file__).with_name("fresh_session_runner.py")
UNKNOWN = "never-seen-item"


@pytest.fixture(scope="module")
def request_batch(data) -> dict[str, np.ndarray]:
    """Four real test contexts (one made an unknown user) with catalogue, unknown and padding candidates."""
    rows = slice(0, 4)
    request = {spec.name: np.asarray(data.test_examples[spec.name][rows]) for spec in contract.USER_INPUTS}
    request[contract.USER_ID] = request[contract.USER_ID].copy()
    request[contract.USER_ID][3] = "a-user-nobody-knows"
    catalogue = np.asarray(data.catalog.item_ids[:5], dtype=object)
    request[contract.CANDIDATE_IDS] = np.array([[*catalogue, UNKNOWN, ""]] * 4, dtype=object)
    return request


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
    assert (run_folder.root / "checkpoints" / "ranking" / "temporal" / "full" / "latest").is_dir()


def test_reloaded_savedmodel_scores_like_the_in_memory_model(exported, ranking_result, request_batch):
    scores, watch_time = score(ranking_result, request_batch)
    served = tf.saved_model.load(str(exported)).signatures[contract.SIGNATURE_NAME](
        **{name: tf.constant(value) for name, value in request_batch.items()})
    np.testing.assert_allclose(served[contract.SCORES].numpy(), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served[contract.EXPECTED_WATCH_TIME].numpy(), watch_time, rtol=1e-5, atol=1e-6)


def test_outputs_are_probability_and_odds_times_the_unit(ranking_result, request_batch):
    scores, watch_time = score(ranking_result, request_batch)
    real = scores[:, :-1]
    assert ((real > 0) & (real < 1)).all() and np.isfinite(watch_time).all()
    # sigmoid(z) = p and exp(z) = p / (1 - p): both outputs come from one logit
    level = ranking_result.watch_time_unit * ranking_result.sampling_rate
    np.testing.assert_allclose(watch_time[:, :-1], level * real / (1 - real), rtol=1e-4)
    np.testing.assert_array_equal(scores[:, -1], 0.0)
    np.testing.assert_array_equal(watch_time[:, -1], 0.0)
    # the unknown user and the unknown item are scored like any other
    assert len(np.unique(np.round(scores[:, :5], 6))) > 5


def test_a_fresh_tf_serving_style_session_answers_alike(exported, ranking_result, request_batch, config, tmp_path):
    request_path, output_path = tmp_path / "request.npz", tmp_path / "out.npz"
    np.savez(request_path, **{name: value.astype(str) if value.dtype == object else value
                              for name, value in request_batch.items()})
    completed = subprocess.run([sys.executable, str(RUNNER), str(exported), str(request_path), str(output_path)],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    served = np.load(output_path)
    scores, watch_time = score(ranking_result, request_batch)
    np.testing.assert_allclose(served[contract.SCORES], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served[contract.EXPECTED_WATCH_TIME], watch_time, rtol=1e-5, atol=1e-6)
    for i, log in enumerate(read_warmup_requests(exported)):
        inputs = {key: tf.make_ndarray(proto) for key, proto in log.predict_log.request.inputs.items()}
        expected, _ = score(ranking_result, {k: v.astype(object) if v.dtype.kind == "S" else v
                                             for k, v in inputs.items()})
        np.testing.assert_allclose(served[f"warmup/{i}/{contract.SCORES}"], expected, rtol=1e-5, atol=1e-6)
    assert i + 1 == config.export.warmup_requests


def test_warmup_requests_carry_every_input(exported, config):
    logs = read_warmup_requests(exported)
    assert len(logs) == config.export.warmup_requests
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == contract.RANKING
        assert set(request.inputs) == {spec.name for spec in contract.RANKING_INPUTS}
        assert tf.make_ndarray(request.inputs[contract.CANDIDATE_IDS]).shape == (1, config.export.max_k)


def test_export_uses_stock_ops_and_records_its_metadata(exported, ranking_result, data):
    assert custom_ops(exported) == set()
    assert exported.name == "1"
    metadata = read_metadata(exported)
    block = signature_metadata(contract.RANKING_INPUTS, contract.RANKING_OUTPUTS)
    assert metadata["inputs"] == block["inputs"] and metadata["outputs"] == block["outputs"]
    assert metadata["watch_time_unit"] == pytest.approx(ranking_result.watch_time_unit)
    assert metadata["data"]["events"] == len(data.dataset.events)
    assert metadata["metrics"]["test_hr@10"] == pytest.approx(ranking_result.metrics["test_hr@10"])


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


def test_missing_user_inputs_take_their_defaults(ranking_result, request_batch):
    candidates = {contract.CANDIDATE_IDS: request_batch[contract.CANDIDATE_IDS]}
    defaults = {spec.name: np.full((4, 1) if spec.rank == 2 else 4, spec.default,
                                   dtype=object if spec.dtype == "string" else np.int64)
                for spec in contract.USER_INPUTS}
    np.testing.assert_allclose(score(ranking_result, candidates)[0], score(ranking_result, {**defaults,
                                                                                            **candidates})[0])


def test_expected_watch_time_is_calibrated_for_the_sampled_negatives(ranking_result, temporal, data):
    """Summed over the items a user has not watched, expected_watch_time is the watch time of their next watch.

    The synthetic logs' watch times are drawn from the planted model, so the test period's mean watch time
    per watch is the ground truth; without the calibration the sum is P_u / num_negatives (~40) times larger.
    """
    full = temporal.full_ranking
    vocabulary = np.asarray(ranking_result.space.item_ids, dtype=object)
    users = range(min(len(full), 60))
    candidates = np.array([[item if item not in full.exclude[u] else "" for item in vocabulary] for u in users],
                          dtype=object)
    contexts = {name: values[:len(candidates)] for name, values in full.contexts.items()}
    _, watch_time = score(ranking_result, {**contexts, contract.CANDIDATE_IDS: candidates})
    per_watch = float(np.nanmean(data.split.test["watch_time"].to_numpy(dtype=np.float64)))
    ratio = float(watch_time.sum(axis=1).mean()) / per_watch
    assert 0.5 < ratio < 2.0, ratio
    assert 0 < ranking_result.sampling_rate < 1
