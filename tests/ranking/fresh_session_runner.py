"""Run in a fresh process by test_export.py: loads the ranking export as TF Serving does and answers.

    python fresh_session_runner.py VERSION_DIR REQUEST.npz OUTPUT.npz

OUTPUT.npz holds the request's outputs ("<output name>") and those of each warmup request
("warmup/<i>/<output name>").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from recsys_common import contract
from serving.session_model import SessionModel
from trainer.export.layout import read_warmup_requests


def main(version_dir: str, request_path: str, output_path: str) -> None:
    with np.load(request_path, allow_pickle=False) as stored:
        request = {key: stored[key] for key in stored.files}
    outputs: dict[str, np.ndarray] = {}
    with SessionModel.load(Path(version_dir)) as model:
        outputs.update(model.run(contract.SIGNATURE_NAME, request))
        for i, log in enumerate(read_warmup_requests(Path(version_dir))):
            inputs = {key: tf.make_ndarray(proto) for key, proto in log.predict_log.request.inputs.items()}
            for name, value in model.run(contract.SIGNATURE_NAME, inputs).items():
                outputs[f"warmup/{i}/{name}"] = value
    np.savez(output_path, **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:4])
