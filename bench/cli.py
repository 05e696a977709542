"""What every benchmark section shares: its command line and the JSON it writes.

A section's JSON is `{"section", "command", "quick", "started", "wall_s", "machine", "provenance", "baseline",
...figures}`; provenance (bench.provenance) is taken when the section starts: the commit, whether the tree was
dirty, and the hash of the code it measures.
The report renders `tables` (a list of {"title", "columns", "rows"}) and `notes` generically; any other
key is the section's own figures (see bench/report.py for how each known section is shown).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import shlex
import sys
import time
from typing import Any

from bench.harness import REPO_ROOT
from bench.machine import machine_info
from bench.provenance import provenance
from trainer.run import json_default

ML_100K_DIR = REPO_ROOT.parent / "shared" / "data" / "ml-100k"


def section_parser(description: str) -> argparse.ArgumentParser:
    """The flags every section takes: `--out FILE.json` and `--quick`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="where to write the results JSON")
    parser.add_argument("--quick", action="store_true", help="a small run that finishes in well under a minute")
    return parser


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """`--data-dir`: the ml-100k folder of the sections that train on MovieLens."""
    parser.add_argument("--data-dir", type=pathlib.Path, default=ML_100K_DIR,
                        help="the ml-100k folder (u.data, u.item, u.user)")


def missing_ml_100k(data_dir: pathlib.Path) -> str | None:
    """Why ml-100k cannot be read from `data_dir` (None when it can)."""
    return None if (data_dir / "u.data").is_file() else f"no u.data in {data_dir} (pass --data-dir)"


class SectionResult:
    """Collects one section's figures and writes them, with the machine, provenance and wall time, as JSON."""

    def __init__(self, section: str, quick: bool, root: pathlib.Path = REPO_ROOT) -> None:
        self.section = section
        self.quick = quick
        self.started = datetime.datetime.now(datetime.UTC)
        self._start = time.perf_counter()
        self.provenance = provenance(root)
        self.payload: dict[str, Any] = {}

    def write(self, out: pathlib.Path) -> pathlib.Path:
        """Writes the JSON to `out` (parents created) and returns the path."""
        document = {
            "section": self.section,
            "command": command_line(),
            "quick": self.quick,
            "started": self.started.isoformat(timespec="seconds"),
            "wall_s": round(time.perf_counter() - self._start, 2),
            "machine": machine_info(),
            "provenance": self.provenance,
            **self.payload,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2, default=json_default) + "\n")
        return out


def command_line() -> str:
    """The command that is running, as `python -m <module> <args>` when started with -m."""
    module = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", module.name] if module is not None else ["python", sys.argv[0]]
    return shlex.join(head + sys.argv[1:])

