"""Where a benchmark figure came from: the commit, whether the tree was dirty, and a hash of the code measured.

Every section's JSON carries `provenance` = {"commit", "dirty", "code_hash", "code_dirs"}. The code hash is
SHA-256 over the path and contents of every tracked `.py` file under CODE_DIRS (in a folder that is not a
git checkout: every `.py` file there), as they are in the working tree. A section is
stale when the hash of today's code differs from the one it recorded: its figures measured other code.
"""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

CODE_DIRS = ("trainer", "serving", "recsys_common", "bench")
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _git(root: pathlib.Path, *args: str) -> str | None:
    """`git <args>` in `root` (stdout stripped), or None when git or the checkout is not there."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_files(root: pathlib.Path = REPO_ROOT, dirs: Sequence[str] = CODE_DIRS) -> list[pathlib.Path]:
    """The `.py` files the figures depend on, relative to `root`, sorted."""
    listed = _git(root, "ls-files", "-z", "--", *[f"{d}/*.py" for d in dirs])
    if listed is not None and _git(root, "rev-parse", "--show-toplevel") == str(root.resolve()):
        return sorted(pathlib.Path(p) for p in listed.split("\0") if p and (root / p).is_file())
    return sorted(p.relative_to(root) for d in dirs for p in (root / d).rglob("*.py") if p.is_file())


def code_hash(root: pathlib.Path = REPO_ROOT, dirs: Sequence[str] = CODE_DIRS) -> str:
    """SHA-256 (hex, first 16 digits) of the paths and contents of `code_files(root, dirs)`."""
    digest = hashlib.sha256()
    for path in code_files(root, dirs):
        digest.update(path.as_posix().encode() + b"\0")
        digest.update((root / path).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def provenance(root: pathlib.Path = REPO_ROOT) -> dict[str, Any]:
    """The commit checked out (None outside git), whether the measured code differs from it, and the code hash.

    "dirty" looks at the files the hash covers only: results and reports written beside the code (the
    harness writes machine.json before the first section) do not make a run dirty.
    """
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *[f"{d}/*.py" for d in CODE_DIRS])
    return {"commit": _git(root, "rev-parse", "--short=12", "HEAD"), "dirty": None if status is None else bool(status),
            "code_hash": code_hash(root), "code_dirs": list(CODE_DIRS)}


def stale_reason(result: Mapping[str, Any], current_hash: str) -> str | None:
    """Why a section's figures no longer describe the code (None when they do)."""
    recorded = result.get("provenance")
    if not isinstance(recorded, Mapping) or not recorded.get("code_hash"):
        return "stale: recorded no code hash (measured before provenance was tracked)"
    if recorded["code_hash"] != current_hash:
        commit = recorded.get("commit") or "an unknown commit"
        dirty = " with uncommitted changes" if recorded.get("dirty") else ""
        return f"stale: {', '.join(CODE_DIRS)} changed since it ran on {commit}{dirty}"
    return None
