"""The serving contract: model names, signature inputs and outputs, artefact names.

This is the single place where these names live. The exporter (trainer), the local server,
its tests and the client all import them from here. The module is pure Python so that the
thin client can use it without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Literal

SIGNATURE_NAME = "serving_default"
# The range of int64, the dtype of ids-as-numbers, ages and times on both sides of the contract.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Model names in saved_models/ and in models.config.
RETRIEVAL = "retrieval"
RETRIEVAL_BRUTEFORCE = "retrieval_bruteforce"
RANKING = "ranking"
MODEL_NAMES = (RETRIEVAL, RETRIEVAL_BRUTEFORCE, RANKING)

# Artefacts written next to the versions, or inside each version.
MODELS_CONFIG = "models.config"
BATCHING_CONFIG = "batching.config"
MONITORING_CONFIG = "monitoring.config"
ASSETS_DIR = "assets"  # <version>/assets/: files the SavedModel ships (TF Serving's layout)
ASSETS_EXTRA_DIR = "assets.extra"  # <version>/assets.extra/: read by TF Serving itself (warmup)
METADATA_ASSET = "export_metadata.json"  # in <version>/assets/
WARMUP_FILE = "tf_serving_warmup_requests"  # in <version>/assets.extra/
# The GetModelMetadata field that carries the SignatureDefMap (the only one TF Serving serves).
SIGNATURE_DEF_FIELD = "signature_def"
# Keys of the export metadata (JSON) that the client reads: the signature block written by
# trainer.export.layout.signature_metadata, and {item_id: title} where the data has titles.
METADATA_INPUTS = "inputs"
METADATA_OUTPUTS = "outputs"
METADATA_ITEM_TITLES = "item_titles"

# Input names: the feature names of the data contract.
USER_ID = "user_id"
WATCH_HISTORY = "watch_history"
SEARCH_HISTORY = "search_history"
GENDER = "gender"
OCCUPATION = "occupation"
REGION = "region"
AGE = "age"
REQUEST_TIME = "request_time"
CANDIDATE_IDS = "candidate_ids"
# Ranking-only user inputs (the YouTube ranking features): in a ranking signature only when the model
# reads them (`ranking_inputs`), and then optional: a request that leaves them out gets their defaults,
# which the model reads as "unknown".
WATCH_HISTORY_TIMES = "watch_history_times"  # [B, H] unix seconds of each watch_history item, aligned with it
IMPRESSION_HISTORY = "impression_history"  # [B, I] items shown to the user before, most recent last
LANGUAGE = "language"  # [B] the user's language

# Output names.
ITEM_IDS = "item_ids"
SCORES = "scores"
EXPECTED_WATCH_TIME = "expected_watch_time"

Dtype = Literal["string", "int64", "float32"]
Default = str | int | float


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature.

    Attributes:
        name: the input or output key.
        dtype: "string", "int64" or "float32".
        rank: 1 for [B], 2 for [B, N] (the second dimension is free).
        default: what an unknown value is sent as; for rank 2, the pad value.
    """

    name: str
    dtype: Dtype
    rank: int
    default: Default = ""


USER_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(USER_ID, "string", 1, ""),
    TensorSpec(WATCH_HISTORY, "string", 2, ""),
    TensorSpec(SEARCH_HISTORY, "string", 2, ""),
    TensorSpec(GENDER, "string", 1, ""),
    TensorSpec(OCCUPATION, "string", 1, ""),
    TensorSpec(REGION, "string", 1, ""),
    TensorSpec(AGE, "int64", 1, 0),
    TensorSpec(REQUEST_TIME, "int64", 1, 0),
)
RANKING_CONTEXT_INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(WATCH_HISTORY_TIMES, "int64", 2, 0),
    TensorSpec(IMPRESSION_HISTORY, "string", 2, ""),
    TensorSpec(LANGUAGE, "string", 1, ""),
)
CANDIDATE_INPUT = TensorSpec(CANDIDATE_IDS, "string", 2, "")
RETRIEVAL_INPUTS = USER_INPUTS


def ranking_inputs(context: Collection[str] = ()) -> tuple[TensorSpec, ...]:
    """The inputs of the ranking signature of a model that reads the ranking-only inputs in `context`.

    A model that reads none of them has the signature of the models before they existed, so clients
    built for that one keep working. The exporter gives the ones a model reads defaults in its
    SignatureDef, which TF Serving feeds for an input a request leaves out.

    Raises:
        ValueError: a name in `context` that is not one of RANKING_CONTEXT_INPUTS.
    """
    known = [spec.name for spec in RANKING_CONTEXT_INPUTS]
    unknown = sorted(set(context) - set(known))
    if unknown:
        raise ValueError(f"unknown ranking-only input(s) {unknown}; they are {known}")
    return USER_INPUTS + tuple(spec for spec in RANKING_CONTEXT_INPUTS if spec.name in context) + (CANDIDATE_INPUT,)


# Every input a ranking signature may have (a model reading every ranking-only input has them all).
RANKING_INPUTS = ranking_inputs([spec.name for spec in RANKING_CONTEXT_INPUTS])

RETRIEVAL_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(ITEM_IDS, "string", 2, ""),
    TensorSpec(SCORES, "float32", 2, 0.0),
)
RANKING_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(SCORES, "float32", 2, 0.0),
    TensorSpec(EXPECTED_WATCH_TIME, "float32", 2, 0.0),
)

INPUTS_BY_MODEL: dict[str, tuple[TensorSpec, ...]] = {
    RETRIEVAL: RETRIEVAL_INPUTS,
    RETRIEVAL_BRUTEFORCE: RETRIEVAL_INPUTS,
    RANKING: RANKING_INPUTS,
}


def shard_model_name(shard: int) -> str:
    """The TF Serving model name of one shard of a sharded retrieval index."""
    return f"{RETRIEVAL}_shard_{shard}"
