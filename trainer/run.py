"""The run folder: resolved config, metrics JSON, logs, TensorBoard summaries, checkpoints.

    runs/<run name>/
        config.yaml        the resolved config of the run
        metrics.json       every metric, merged as the stages finish
        train.log          the log of the run
        tensorboard/<stage>/
        checkpoints/<stage>/
        *.md / *.json      tables written by the stages (ablations, model comparison)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import numpy as np
import yaml

LOGGER_NAME = "trainer"


@dataclasses.dataclass
class RunContext:
    """Where one run writes; the stages receive it instead of paths of their own.

    Attributes:
        root: the run folder (created on construction).
    """

    root: pathlib.Path

    def __post_init__(self) -> None:
        self.root = pathlib.Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(LOGGER_NAME)

    def tensorboard_dir(self, stage: str) -> pathlib.Path:
        return self.root / "tensorboard" / stage

    def checkpoint_dir(self, stage: str) -> pathlib.Path:
        path = self.root / "checkpoints" / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_config(self, config: dict[str, Any]) -> None:
        (self.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def write_json(self, name: str, payload: Any) -> pathlib.Path:
        path = self.root / name
        path.write_text(json.dumps(payload, indent=2, default=json_default) + "\n")
        return path

    def write_text(self, name: str, text: str) -> pathlib.Path:
        path = self.root / name
        path.write_text(text)
        return path

    def record_metrics(self, stage: str, metrics: dict[str, Any]) -> None:
        """Merges `metrics` under `stage` into metrics.json."""
        merged = self.metrics()
        merged[stage] = metrics
        self.write_json("metrics.json", merged)

    def metrics(self) -> dict[str, Any]:
        path = self.root / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}


def attach_log_file(run: RunContext) -> logging.Handler:
    """Sends the trainer's log to the console and to <run>/train.log; returns the file handler."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # TensorFlow's absl handler on the root logger would print every line twice
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handler = logging.FileHandler(run.root / "train.log")
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logger.handlers):
        console = logging.StreamHandler()
        console.setFormatter(formatter)
        logger.addHandler(console)
    return handler


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Renders rows of metrics as a Markdown table (floats with 4 decimals)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row.get(c):.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def json_default(value: Any) -> Any:
    """JSON for NumPy scalars/arrays and paths (the `default=` of `json.dumps`)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
