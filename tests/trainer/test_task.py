"""`python -m trainer.task` end to end: a tiny run trains, evaluates and exports SavedModels
that a fresh process loads the way TF Serving does and that answer a request."""

import json
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from bench.cli import ML_100K_DIR, missing_ml_100k
from recsys_common import contract
from trainer.export.server_configs import LOCAL_MODELS_CONFIG

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d (INFO|WARNING) ")  # trainer.run's log format


def run_task(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.task", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("task")
    result = run_task("--config", str(TINY), "--run_dir", str(out / "runs"), "--output-dir",
                      str(out / "saved_models"), "--run-name", "tiny", "--ranking.compare", "[itempop, neumf]")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_run_folder_holds_config_metrics_and_logs(tiny_run):
    out, result = tiny_run
    run = out / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "recall@10" in result.stdout and str(run) in result.stdout
    assert 0.0 <= metrics["retrieval"]["recall@10"] <= 1.0
    assert metrics["retrieval"]["recall@10"] > metrics["retrieval"]["popularity_recall@10"]
    assert set(metrics["wall_time_s"]) == {"data", "retrieval", "ranking", "refit", "export"}  # export.refit: on
    assert "synthetic" in (run / "config.yaml").read_text()
    assert "stage export: done" in (run / "train.log").read_text()
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    assert result.stdout.splitlines()[0].split() == ["stage", "metric", "value"]


def test_only_our_log_lines_reach_stderr(tiny_run):
    """No TensorFlow / absl start-up noise (CUDA probing, oneDNN notices, Keras warnings), and no progress
    bars when stderr is not a terminal."""
    _, result = tiny_run
    noise = [line for line in result.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert not noise, f"lines other than the trainer's log reached stderr: {noise[:5]}"
    assert "stage retrieval: done" in result.stderr


def test_exports_load_in_a_fresh_process_and_answer(tiny_run):
    out, _ = tiny_run
    saved = out / "saved_models"
    for name in (*contract.MODEL_NAMES, contract.MODELS_CONFIG, LOCAL_MODELS_CONFIG, contract.BATCHING_CONFIG,
                 contract.MONITORING_CONFIG):
        assert (saved / name).exists(), name
    # A trained user and an unknown one, every other input at its contract default.
    script = textwrap.dedent(f"""
        import json, pathlib, numpy as np
        from recsys_common import contract
        from serving.session_model import SessionModel

        def column(spec):
            value = "" if spec.dtype == "string" else 0
            rows = [[value], [value]] if spec.rank == 2 else [value, value]
            return np.array(rows, dtype=object if spec.dtype == "string" else spec.dtype)

        saved = pathlib.Path({str(saved)!r})
        request = {{spec.name: column(spec) for spec in contract.RETRIEVAL_INPUTS}}
        request[contract.USER_ID] = np.array(["u001", "nobody"], dtype=object)
        answers = {{}}
        for name in (contract.RETRIEVAL, contract.RETRIEVAL_BRUTEFORCE):
            with SessionModel.load(saved / name / "1") as model:
                outputs = model.run(contract.SIGNATURE_NAME, request)
            answers[name] = [[i.decode() for i in row] for row in outputs[contract.ITEM_IDS]]
            answers[name + "_scores"] = outputs[contract.SCORES].tolist()
        request[contract.CANDIDATE_IDS] = np.array(
            [answers[contract.RETRIEVAL][0][:5], ["never-seen", "", "", "", ""]], dtype=object)
        with SessionModel.load(saved / contract.RANKING / "1") as model:
            outputs = model.run(contract.SIGNATURE_NAME, request)
        answers["ranking"] = outputs[contract.SCORES].tolist()
        answers["expected_watch_time"] = outputs[contract.EXPECTED_WATCH_TIME].tolist()
        print(json.dumps(answers))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(answers["retrieval"][0]) == 50 == len(set(answers["retrieval"][0]))
    assert answers["retrieval"][0] != answers["retrieval"][1], "a trained user gets other items than an unknown one"
    assert answers["retrieval"][0][:10] == answers["retrieval_bruteforce"][0][:10] or (
        answers["retrieval_scores"][0][:10] == pytest.approx(answers["retrieval_bruteforce_scores"][0][:10], abs=1e-4))
    assert all(0.0 < p < 1.0 for p in answers["ranking"][0] + answers["ranking"][1][:1])
    assert all(t > 0.0 for t in answers["expected_watch_time"][0] + answers["expected_watch_time"][1][:1])
    assert answers["ranking"][1][1:] == [0.0] * 4, "padding candidates score 0"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--retrieval.epochs", "three"], "retrieval.epochs: expected int, got 'three'"),
        (["--ranking.model", "deepfm"], "ranking.model: unknown model 'deepfm'"),
        (["--config", "missing.yaml"], "missing.yaml does not exist"),
        (["--data.source", "ml-100k", "--data-dir", "/nonexistent/ml-100k", "--data.download", "false"], "u.data"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message):
    result = run_task(*args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_too_many_evaluation_negatives_stop_the_run_before_anything_trains(tmp_path):
    """ml-100k's busiest user leaves fewer than 1,000 unwatched items: the data stage says so, not the ranker."""
    if missing_ml_100k(ML_100K_DIR) is not None:
        pytest.skip(missing_ml_100k(ML_100K_DIR))
    result = run_task("--data.source", "ml-100k", "--data-dir", str(ML_100K_DIR), "--data.download", "false",
                      "--data.eval_negatives", "1000", "--run_dir", str(tmp_path), "--run-name", "negatives",
                      timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(r"data\.eval_negatives is 1000, but user '\d+' has interacted with \d+ of the \d+ items that "
                     r"the .* draws negatives from, which leaves \d+; set data\.eval_negatives to at most \d+",
                     result.stderr)
    log = (tmp_path / "negatives" / "train.log").read_text()
    assert "stage data: failed" in log and "stage retrieval" not in log
