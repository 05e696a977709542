"""Exports the ranking model as `saved_models/ranking/<version>/` (TF Serving layout, stock ops only).

The SavedModel's only signature is `serving_default` of trainer.ranking.signature (the
contract's ranking inputs the model reads -> scores, expected_watch_time). The version carries its export
metadata (signature inputs with defaults, data, config, metrics, the comparison table) and
warmup requests built from real test contexts, written and published atomically through
trainer.export.layout.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from recsys_common import contract
from trainer.config import ExportConfig
from trainer.data.bundle import TrainingData
from trainer.export import layout
from trainer.ranking.train import RankingResult
from trainer.retrieval.servability import check_servable


def export_ranking(result: RankingResult, data: TrainingData, export: ExportConfig, base_dir: pathlib.Path,
                   publish: layout.Publisher = layout.publish_version) -> pathlib.Path:
    """Writes a new version of the `ranking` model under `base_dir/ranking` and returns its folder.

    `publish` publishes it (`layout.VersionSet.stage` to publish it with the retrieval models).
    """
    signature = result.signature()
    examples = data.test_examples if len(data.test_examples[contract.USER_ID]) else data.train_examples
    requests = warmup_requests(examples, data.catalog.item_ids, signature.inputs,
                               export.warmup_requests, min(export.max_k, len(data.catalog.item_ids)))
    metadata = export_metadata(result, data)

    write_version = layout.version_writer(signature, contract.RANKING, metadata, requests)

    def write(version_dir: pathlib.Path) -> None:
        write_version(version_dir)
        check_servable(version_dir)  # stock TensorFlow Serving must be able to load it

    return publish(pathlib.Path(base_dir) / contract.RANKING, write)


def export_metadata(result: RankingResult, data: TrainingData) -> dict[str, Any]:
    """The version's metadata asset: how to call it, what it was trained on, how well it did."""
    return {
        "model": contract.RANKING,
        **layout.signature_metadata(result.signature().inputs, contract.RANKING_OUTPUTS),
        "ranking_model": result.model_name,
        "watch_time_unit": result.watch_time_unit,
        "sampling_rate": result.sampling_rate,
        "expected_watch_time": "exp(logit) * watch_time_unit * sampling_rate: the watch time (in the source's "
                               "unit) that the user's next watch spends on the candidate",
        "data": {"source": data.dataset.name, "events": len(data.dataset.events), "users": len(data.dataset.users),
                 "items": len(data.dataset.items), **result.space.to_json()},
        "trained_on": data.trained_on,  # what the model saw: events, time range, whether refitted (export.refit)
        "config": dataclasses.asdict(result.config),
        "metrics": result.metrics,
        "comparison": result.comparison,
    }


def warmup_requests(examples: dict[str, np.ndarray], item_ids: np.ndarray,
                    inputs: tuple[contract.TensorSpec, ...], count: int, num_candidates: int
                    ) -> list[dict[str, np.ndarray]]:
    """`count` single-user requests from real contexts, each ranking `num_candidates` catalogue items.

    Args:
        examples: event_examples (any split); their user inputs are reused.
        item_ids: [M] the catalogue.
        inputs: the signature's inputs (RankingSignature.inputs); all but candidate_ids come from `examples`.
        count: number of requests (at least 1).
        num_candidates: N, candidates per request.
    """
    rows = len(examples[contract.USER_ID])
    if rows == 0:
        raise ValueError("warmup_requests: no examples to build requests from")
    chosen = np.linspace(0, rows - 1, max(count, 1)).astype(int)
    requests = []
    for index, row in enumerate(chosen):
        request = {spec.name: np.asarray(examples[spec.name][row:row + 1])
                   for spec in inputs if spec.name != contract.CANDIDATE_IDS}
        start = (index * num_candidates) % max(len(item_ids), 1)
        candidates = np.roll(np.asarray(item_ids, dtype=object), -start)[:num_candidates]
        request[contract.CANDIDATE_IDS] = candidates[None, :]
        requests.append(request)
    return requests
