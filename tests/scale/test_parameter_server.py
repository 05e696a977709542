"""Parameter-server mode: the retrieval model trains with its embedding tables split over the ps tasks."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from .conftest import TINY_CONFIG

ROOT = pathlib.Path(__file__).resolve().parents[2]
PS_DEVICES = ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"]


def test_retrieval_trains_with_embedding_tables_sharded_over_the_parameter_servers() -> None:
    runner = pathlib.Path(__file__).with_name("ps_cluster_runner.py")
    done = subprocess.run([sys.executable, str(runner), str(TINY_CONFIG)], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["strategy"] == "ParameterServerStrategyV2"
    split = [table for table in result["tables"] if len(table["shards"]) > 1]
    assert len(split) >= 3, result["tables"]  # user, item, title/query token tables at least
    for table in result["tables"]:  # a table above the shard size is split row-wise, one part per ps task
        devices = sorted(shard["device"] for shard in table["shards"])
        if table["bytes"] >= 2 * result["min_shard_bytes"]:
            assert devices == PS_DEVICES and min(shard["rows"] for shard in table["shards"]) > 0, table
        else:
            assert len(devices) == 1 and devices[0] in PS_DEVICES, table
    assert result["lookup_error"] == 0.0  # a lookup through the shards reads exactly the stored rows
    metrics = result["metrics"]
    assert metrics["epochs_trained"] == 3
    assert metrics["recall@50"] > metrics["popularity_recall@50"] + 0.1, metrics  # it learned across the cluster
