"""Fixtures of the benchmark tests: a small clustered corpus and stand-in section modules."""

from __future__ import annotations

import pathlib
import textwrap

import numpy as np
import pytest

SECTION_MODULES = {
    "failing_section": """
        raise RuntimeError("the benchmark broke: no such model")
    """,
    "sleeping_section": """
        import time
        time.sleep(60)
    """,
    "skipping_section": """
        import json, sys
        out = sys.argv[sys.argv.index("--out") + 1]
        open(out, "w").write(json.dumps({"section": "skipping_section", "skipped": "the trainer is not there yet"}))
    """,
    "silent_section": """
        pass
    """,
}


@pytest.fixture(scope="session")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    """2,000 clustered items and 40 queries of dimension 16 (float32)."""
    from bench.ann_peers import make_embeddings

    return make_embeddings(2000, 40, 16, seed=3)


@pytest.fixture
def section_modules(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A folder of stand-in section modules, importable here and in subprocesses."""
    for name, source in SECTION_MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path
