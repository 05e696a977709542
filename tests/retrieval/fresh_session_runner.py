"""Run in a fresh process by test_export.py: loads exports the way TF Serving does and answers requests.

    python fresh_session_runner.py REQUESTS.npz OUTPUT.npz MODEL_NAME=VERSION_DIR ...

REQUESTS.npz holds "<request set>/<input name>" arrays. For every model it runs each request
set through serving_default and replays the version's warmup requests; OUTPUT.npz holds
"<model>/<request set>/<output name>" arrays (strings as str) and
"<model>/warmup/<i>/<output name>".
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf

from recsys_common import contract
from serving.session_model import SessionModel
from trainer.export.layout import read_warmup_requests


def main(requests_path: str, output_path: str, models: list[str]) -> None:
    requests: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    with np.load(requests_path, allow_pickle=False) as stored:
        for key in stored.files:
            request_set, name = key.split("/")
            requests[request_set][name] = stored[key]
    outputs: dict[str, np.ndarray] = {}
    for entry in models:
        name, export_dir = entry.split("=", 1)
        with SessionModel.load(Path(export_dir)) as model:
            for request_set, inputs in requests.items():
                for output, value in model.run(contract.SIGNATURE_NAME, inputs).items():
                    outputs[f"{name}/{request_set}/{output}"] = _plain(value)
            for i, log in enumerate(read_warmup_requests(Path(export_dir))):
                inputs = {key: tf.make_ndarray(proto) for key, proto in log.predict_log.request.inputs.items()}
                for output, value in model.run(contract.SIGNATURE_NAME, inputs).items():
                    outputs[f"{name}/warmup/{i}/{output}"] = _plain(value)
    np.savez(output_path, allow_pickle=False, **outputs)


def _plain(value: np.ndarray) -> np.ndarray:
    if value.dtype == object:
        return np.vectorize(lambda item: item.decode("utf-8"), otypes=[str])(value) if value.size else value.astype(str)
    return value


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
