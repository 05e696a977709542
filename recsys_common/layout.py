"""The version folders of a model base path, as TF Serving reads them (`<model_base>/<version>/`).

Every child whose name is a non-negative integer is a version; anything else (e.g. a
`.tmp-*` export in progress) is ignored. The exporter and the server both list versions here.
"""

from __future__ import annotations

from pathlib import Path

from recsys_common import contract


def version_directories(base_path: Path) -> dict[int, Path]:
    """{version: folder} of the numeric version directories under a base path ({} if it cannot be listed)."""
    try:
        entries = list(Path(base_path).iterdir())
    except OSError:
        return {}
    return {int(entry.name): entry for entry in entries if entry.name.isdigit() and entry.is_dir()}


def warmup_file(version_dir: Path) -> Path:
    """`<version>/assets.extra/tf_serving_warmup_requests`, where TF Serving looks for warmup requests."""
    return Path(version_dir) / contract.ASSETS_EXTRA_DIR / contract.WARMUP_FILE
