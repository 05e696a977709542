"""The id -> embedding-row lookup layer both stages share (the in-graph twin of `Vocabularies.lookup`)."""

from __future__ import annotations

from collections.abc import Sequence

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tf_keras as keras


def string_lookup(vocabulary: Sequence[str]) -> keras.layers.StringLookup:
    """"" -> 0 (padding), out of vocabulary -> 1 (OOV), vocabulary[i] -> i + 2 (as `Vocabularies.lookup`)."""
    return keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token="", num_oov_indices=1)
