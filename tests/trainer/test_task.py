"""`python -m trainer.task` end to end: a tiny run trains, evaluates and exports SavedModels
that a fresh process loads the way TF Serving does and that answer a request."""

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def run_task(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.task", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


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
    assert set(metrics["wall_time_s"]) == {"data", "retrieval", "ranking", "export"}
    assert "synthetic" in (run / "config.yaml").read_text()
    assert "stage export: done" in (run / "train.log").read_text()
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    assert "cuInit" not in result.stderr and "oneDNN" not in result.stderr


def test_exports_load_in_a_fresh_process_and_answer(tiny_run):
    out, _ = tiny_run
    saved = out / "saved_models"
    for name in ("retrieval", "retrieval_bruteforce", "ranking", "models.config", "models.local.config",
                 "batching.config", "monitoring.config"):
        assert (saved / name).exists(), name
    script = textwrap.dedent(f"""
        import json, pathlib, numpy as np
        from serving.session_model import SessionModel
        saved = pathlib.Path({str(saved)!r})
        request = {{"user_id": np.array([b"u1", b"nobody"]), "watch_history": np.array([[b""], [b""]]),
                   "search_history": np.array([[b""], [b""]]), "gender": np.array([b"", b""]),
                   "occupation": np.array([b"", b""]), "region": np.array([b"", b""]),
                   "age": np.array([0, 0], np.int64), "request_time": np.array([0, 0], np.int64)}}
        answers = {{}}
        for name in ("retrieval", "retrieval_bruteforce"):
            with SessionModel.load(saved / name / "1") as model:
                outputs = model.run("serving_default", request)
            answers[name] = [[i.decode() for i in row] for row in outputs["item_ids"]]
            answers[name + "_scores"] = outputs["scores"].tolist()
        request["candidate_ids"] = np.array([answers["retrieval"][0][:5], [b"never-seen", b"", b"", b"", b""]])
        with SessionModel.load(saved / "ranking" / "1") as model:
            outputs = model.run("serving_default", request)
        answers["ranking"] = outputs["scores"].tolist()
        answers["expected_watch_time"] = outputs["expected_watch_time"].tolist()
        print(json.dumps(answers))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(answers["retrieval"][0]) == 50 == len(set(answers["retrieval"][0]))
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
