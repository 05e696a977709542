"""The evaluation protocols' demand for negatives, checked before anything trains."""

from __future__ import annotations

import dataclasses
import re

import pytest

from trainer.config import Config
from trainer.data.bundle import TrainingData
from trainer.data.schema import DataError
from trainer.ranking.protocol import check_eval_negatives, ncf_protocol, temporal_protocol


def with_negatives(config: Config, eval_negatives: int) -> Config:
    return dataclasses.replace(config, data=dataclasses.replace(config.data, eval_negatives=eval_negatives))


def largest_accepted(data: TrainingData, config: Config) -> int:
    """The bound the error names when far too many negatives are asked for."""
    with pytest.raises(DataError, match=r"^data\.eval_negatives is 1000000, but user '[^']+' has interacted") as error:
        check_eval_negatives(data, with_negatives(config, 1_000_000))
    return int(re.search(r"set data\.eval_negatives to at most (\d+)", str(error.value)).group(1))


def build_both_protocols(data: TrainingData, config: Config) -> None:
    temporal_protocol(data, config)
    ncf_protocol(data.dataset, config)


def test_the_named_bound_is_exactly_what_the_protocols_can_sample(data: TrainingData, config: Config) -> None:
    bound = largest_accepted(data, config)
    assert 0 < bound < len(data.catalog.item_ids)
    at_bound = with_negatives(config, bound)
    check_eval_negatives(data, at_bound)
    build_both_protocols(data, at_bound)
    beyond = with_negatives(config, bound + 1)
    with pytest.raises(DataError, match=rf"data\.eval_negatives is {bound + 1}, .* at most {bound}, or train on"):
        check_eval_negatives(data, beyond)
    with pytest.raises(DataError, match="candidate negatives"):
        build_both_protocols(data, beyond)
