"""trainer.tune: a real Optuna search on tiny synthetic data, resumed, and its errors."""

from __future__ import annotations

import pathlib

import optuna
import pytest
import yaml

from trainer import tune
from trainer.config import load_config

TINY = pathlib.Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture()
def tiny_config(tmp_path: pathlib.Path) -> pathlib.Path:
    """tests/configs/tiny.yaml with one-epoch ceilings and its runs under tmp_path."""
    raw = yaml.safe_load(TINY.read_text())
    raw["run_dir"] = str(tmp_path / "runs")
    raw["retrieval"]["epochs"] = 1
    raw["ranking"]["epochs"] = 1
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _trial_numbers(study_dir: pathlib.Path, stage: str) -> list[int]:
    study = optuna.load_study(study_name=stage, storage=f"sqlite:///{study_dir / tune.STUDY_FILE}")
    return sorted(trial.number for trial in tune.finished_trials(study))


def test_search_writes_a_loadable_config_and_a_rerun_resumes(tiny_config: pathlib.Path, tmp_path: pathlib.Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    study_dir = tmp_path / "study"
    assert tune.main(["--config", str(tiny_config), "--trials", "1", "--study-dir", str(study_dir)]) == 0
    first = capsys.readouterr().out
    assert "retrieval trial 0 (1/1)" in first and "ranking trial 0 (1/1)" in first
    best = study_dir / tune.BEST_FILE
    config = load_config(best)
    study = optuna.load_study(study_name="retrieval", storage=f"sqlite:///{study_dir / tune.STUDY_FILE}")
    params = study.best_trial.params
    assert config.retrieval.embedding_dim == params["embedding_dim"]
    assert config.retrieval.tower_layers == tune.TOWER_LAYERS[params["tower_layers"]]
    assert config.retrieval.learning_rate == pytest.approx(params["learning_rate"])
    assert config.retrieval.epochs == 1
    assert config.synthetic.num_users == 200  # the rest of the input config is kept
    assert best.read_text().startswith("# Tuned by `python -m trainer.tune")

    # A second run with more trials continues the same studies: trial numbers go on from 1.
    assert tune.main(["--config", str(tiny_config), "--trials", "2", "--study-dir", str(study_dir),
                      "--stages", "retrieval"]) == 0
    second = capsys.readouterr().out
    assert "retrieval: resuming, 1 of 2 trial(s) already finished" in second
    assert "retrieval trial 1 (2/2)" in second
    assert _trial_numbers(study_dir, "retrieval") == [0, 1]
    assert _trial_numbers(study_dir, "ranking") == [0]  # not searched: its best trial is kept
    reloaded = load_config(best)
    assert reloaded.ranking.embedding_dim == config.ranking.embedding_dim


def test_another_config_in_the_same_study_dir_is_refused(tiny_config: pathlib.Path, tmp_path: pathlib.Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    study_dir = tmp_path / "study"
    tune.open_study(study_dir, "retrieval", "a-different-config", seed=1)
    assert tune.main(["--config", str(tiny_config), "--trials", "1", "--study-dir", str(study_dir)]) == 2
    assert "holds a search for another config" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--trials", "0"], "--trials must be >= 1, got 0"),
    (["--trials", "1", "--stages", "retrieval,serving"], "--stages: expected some of retrieval, ranking"),
])
def test_bad_arguments_exit_2(tiny_config: pathlib.Path, argv: list[str], message: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert tune.main(["--config", str(tiny_config), *argv]) == 2
    assert message in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("retrieval:\n  epochs: three\n")
    assert tune.main(["--config", str(path), "--trials", "2"]) == 2
    assert "retrieval.epochs: expected int, got 'three'" in capsys.readouterr().err
