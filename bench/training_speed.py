"""Training speed: examples per second and wall time per epoch of both models, and the end-to-end task time.

`python -m bench.training_speed --out FILE.json [--quick] [--baseline-ref GIT_REF]`

On the default config (the synthetic YouTube-like logs; --quick: a small synthetic config):
- retrieval: `train_retrieval` as the task runs it, each epoch timed (training + that epoch's full-corpus
  validation + checkpoint), then one more training-only epoch of the trained model: examples/s = training
  events / that epoch's wall time;
- ranking: the default model (config.ranking.model) and plain NeuMF on the temporal split, trained by
  `trainer.ranking.train.train_model`, whose history times each epoch's training (negative sampling
  included, validation excluded); an example is one (context, candidate, label) triple, i.e. each training
  event with its 1 + num_negatives candidates;
- end to end: `python -m trainer.task` (same config) as a subprocess: wall time including start-up and
  export (--quick: --no-export), and the stage times it records in the run's metrics.json.
The per-epoch histories (loss, validation metrics) feed the report's training curves. If the trainer is
not importable yet the section is skipped with the reason.

With --baseline-ref, the same section first runs on that commit's code (a git worktree, a subprocess),
then on this one, and a table compares each model's examples/s with the baseline's: a before/after
figure from one run on one machine.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.cli import SectionResult, section_parser
from bench.harness import REPO_ROOT

QUICK_OVERRIDES: dict[str, Any] = {
    "synthetic.num_users": 300,
    "synthetic.num_items": 300,
    "synthetic.events_per_user": 20,
    "retrieval.epochs": 2,
    "ranking.epochs": 2,
    "ranking.compare": ["itempop"],
}
TASK_TIMEOUT_S = {True: 150, False: 420}


@dataclasses.dataclass
class EpochTimer:
    """Collects the wall time of each epoch from an epoch-end callback (the first epoch counts from creation)."""

    clock: Callable[[], float] = time.perf_counter
    seconds: list[float] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.last = self.clock()

    def __call__(self, epoch: int, record: dict[str, float]) -> None:
        del epoch, record
        now = self.clock()
        self.seconds.append(now - self.last)
        self.last = now


def speed_row(model: str, examples_per_epoch: int, epoch_seconds: list[float], what: str) -> dict[str, Any]:
    """Per-epoch figures: the first epoch (includes graph tracing) and the median of the rest."""
    steady = epoch_seconds[1:] or epoch_seconds
    median = float(np.median(steady))
    return {
        "model": model,
        "examples_per_epoch": examples_per_epoch,
        "epochs_timed": len(epoch_seconds),
        "first_epoch_s": round(epoch_seconds[0], 3),
        "epoch_s_median": round(median, 3),
        "examples_per_s": round(examples_per_epoch / median, 1),
        "timed": what,
    }


def retrieval_speed(config: Any, data: Any, run: Any) -> tuple[Any, list[dict[str, Any]], dict[str, list[float]]]:
    """Trains the candidate generator as the task does; returns (result, speed rows, history)."""
    from trainer.retrieval.train import train_retrieval, training_input

    timer = EpochTimer()
    result = train_retrieval(config, data, run, epoch_callback=timer)
    train = training_input(data)
    examples = len(train)
    rows = [speed_row("retrieval (two-tower)", examples, timer.seconds, "train + per-epoch validation + checkpoint")]
    dataset = train.batches(config.retrieval.batch_size, seed=config.seed)
    start = time.perf_counter()
    result.model.fit(dataset, epochs=1, verbose=0)
    rows.append(speed_row("retrieval (two-tower)", examples, [time.perf_counter() - start], "training only (warm)"))
    return result, rows, result.history


def ranking_speed(config: Any, data: Any, retrieval: Any) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """Trains the default ranking model and NeuMF on the temporal split; returns (speed rows, histories)."""
    from trainer.ranking import retrieval_feature
    from trainer.ranking.protocol import temporal_protocol
    from trainer.ranking.train import train_model

    temporal = temporal_protocol(data, config)
    scorer = retrieval_feature.scorer_for(retrieval)
    examples = len(temporal.train["item_id"]) * (1 + config.ranking.num_negatives)
    rows, histories = [], {}
    for name in dict.fromkeys([config.ranking.model, "neumf"]):
        _, history = train_model(name, temporal, config, retrieval_scorer=scorer if name == "full" else None)
        seconds = [float(s) for s in history.get("seconds", [])]
        if seconds:
            rows.append(speed_row(f"ranking ({name})", examples, seconds, "training only (negative sampling included)"))
        histories[f"ranking ({name})"] = {k: v for k, v in history.items() if k not in ("seconds", "steps")}
    return rows, histories


def end_to_end(overrides: dict[str, Any], work_dir: pathlib.Path, timeout_s: float, export: bool) -> dict[str, Any]:
    """`python -m trainer.task` as a user runs it: wall time and the stage times of its metrics.json."""
    flags = [f"--{key} {json.dumps(value)}" for key, value in overrides.items()] + ([] if export else ["--no-export"])
    command = [sys.executable, "-m", "trainer.task", "--run_dir", str(work_dir / "runs"), "--run-name", "bench",
               "--output-dir", str(work_dir / "saved_models")]
    for flag in flags:
        command += flag.split(" ", 1)
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s,
                               check=False)
    wall_s = time.perf_counter() - start
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"python -m trainer.task exited {completed.returncode}: {' | '.join(tail)}")
    metrics = json.loads((work_dir / "runs" / "bench" / "metrics.json").read_text())
    return {"command": " ".join(["python -m trainer.task", *flags]), "wall_s": round(wall_s, 2),
            "stage_s": metrics.get("wall_time_s", {})}


def measure(quick: bool, work_dir: pathlib.Path) -> dict[str, Any]:
    """Every figure of the section; raises ImportError when the trainer is not there yet."""
    import trainer  # noqa: F401  (sets the TensorFlow environment)
    from trainer.config import load_config
    from trainer.data.bundle import prepare
    from trainer.run import RunContext

    overrides = QUICK_OVERRIDES if quick else {}
    config = load_config(None, {**overrides, "run_dir": str(work_dir / "inprocess")})
    start = time.perf_counter()
    data = prepare(config)
    prepare_s = time.perf_counter() - start
    retrieval, retrieval_rows, retrieval_history = retrieval_speed(config, data, RunContext(work_dir / "inprocess"))
    ranking_rows, ranking_histories = ranking_speed(config, data, retrieval)
    task = end_to_end(overrides, work_dir / "task", TASK_TIMEOUT_S[quick], export=not quick)
    speed = retrieval_rows + ranking_rows
    return {
        "baseline": "none (absolute throughput); the end-to-end time is split into the task's own stage times",
        "config": "defaults (configs/default.yaml)" if not quick else f"defaults with {overrides}",
        "data": {"training_events": len(data.train_examples["item_id"]), "prepare_s": round(prepare_s, 3)},
        "tables": [
            {"title": "Training speed per model", "columns": list(speed[0]), "rows": speed},
            {"title": f"End to end: `{task['command']}`",
             "columns": ["wall_s", *task["stage_s"]], "rows": [{"wall_s": task["wall_s"], **task["stage_s"]}],
             "note": "wall_s includes Python/TensorFlow start-up; the other columns are the task's stage times."},
        ],
        "end_to_end": task,
        "histories": {"retrieval (two-tower)": retrieval_history, **ranking_histories},
    }


def baseline_rows(ref: str, quick: bool, work_dir: pathlib.Path) -> list[dict[str, Any]]:
    """The speed rows of `ref`'s code, from its own training_speed section run in a git worktree."""
    tree, out = work_dir / "baseline", work_dir / "baseline.json"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    try:
        command = [sys.executable, "-m", "bench.training_speed", "--out", str(out), *(["--quick"] if quick else [])]
        completed = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"the training_speed section of {ref} exited {completed.returncode}: {tail}")
        rows: list[dict[str, Any]] = json.loads(out.read_text())["tables"][0]["rows"]
        return rows
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO_ROOT, check=False,
                       capture_output=True)


def comparison(current: list[dict[str, Any]], baseline: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """A table of each model's examples/s here and at `ref` (rows matched by model and what was timed)."""
    before = {(row["model"], row["timed"]): row["examples_per_s"] for row in baseline}
    rows = [{"model": row["model"], "timed": row["timed"], f"examples_per_s ({ref})": then,
             "examples_per_s (this commit)": row["examples_per_s"], "ratio": round(row["examples_per_s"] / then, 3)}
            for row in current if (then := before.get((row["model"], row["timed"]))) is not None]
    return {"title": f"Against {ref}, measured in the same run (ratio > 1: faster now)", "columns": list(rows[0]),
            "rows": rows, "note": f"{ref} ran first, then this commit, on the same machine and config."}


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="also time this git commit's code, in the same run, and compare")
    args = parser.parse_args(argv)
    result = SectionResult("training_speed", args.quick)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as work:
        baseline = baseline_rows(args.baseline_ref, args.quick, pathlib.Path(work)) if args.baseline_ref else None
        result.payload.update(measure(args.quick, pathlib.Path(work)))
    if baseline is not None:
        result.payload["tables"].append(comparison(result.payload["tables"][0]["rows"], baseline, args.baseline_ref))
        result.payload["baseline_ref"] = args.baseline_ref
    result.write(args.out)


if __name__ == "__main__":
    main()
