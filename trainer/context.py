"""`ModelContext`: what both stages' models are built from besides their config, fixed once per run's data.

Retrieval's towers and the ranking features read the training vocabularies, the item catalogue and the
run's time range from here; nothing is copied out of `Vocabularies` or `ItemCatalog`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.data.catalog import ItemCatalog
from trainer.data.pipeline import AGE_BUCKETS
from trainer.data.vocab import Vocabularies

if TYPE_CHECKING:
    from trainer.data.bundle import TrainingData


@dataclasses.dataclass(frozen=True, eq=False)
class ModelContext:
    """The data facts a model is built from.

    Attributes:
        vocab: the training vocabularies (user_ids, item_ids, genders, occupations, regions, genres,
            title_tokens, query_tokens; tuples of str without "").
        catalog: every item that can be a candidate: item_ids [M] str, genres [M, G] str ("" pads),
            title_tokens [M, T] str, release_time [M] int64 unix seconds (0 = unknown), titles [M] str.
        t_max: the latest training timestamp (unix seconds): example and item ages are measured from it.
        t_span: the training time range in seconds (> 0), the unit of the example age.
        age_boundaries: ascending bucket edges of the `age` input (years or source codes; 0 = unknown).
        available: the optional data columns that hold values (`schema.Dataset.available()`).
        history_length: watches the models read (the most recent; the training examples' H); None = all.
    """

    vocab: Vocabularies
    catalog: ItemCatalog
    t_max: int
    t_span: int
    age_boundaries: tuple[float, ...] = AGE_BUCKETS
    available: frozenset[str] = frozenset()
    history_length: int | None = None

    def __post_init__(self) -> None:
        if self.t_span <= 0:
            raise ValueError(f"ModelContext: t_span must be > 0, got {self.t_span}")
        if not self.vocab.item_ids:
            raise ValueError("ModelContext: the item vocabulary is empty")
        rows = len(self.catalog.item_ids)
        genres, release = np.shape(self.catalog.genres), np.shape(self.catalog.release_time)
        if genres[:1] != (rows,) or release != (rows,):
            raise ValueError(f"ModelContext: catalogue arrays disagree: {rows} ids, genres {genres}, "
                             f"release_time {release}")

    @classmethod
    def build(cls, vocab: Vocabularies, catalog: ItemCatalog, t_max: int, t_span: int,
              available: set[str] | frozenset[str] = frozenset(), age_boundaries: Sequence[float] = AGE_BUCKETS,
              history_length: int | None = None) -> ModelContext:
        """The context with its fields normalised (ints, float boundaries, a frozen set of columns)."""
        return cls(vocab, catalog, int(t_max), int(t_span), tuple(float(b) for b in age_boundaries),
                   frozenset(available), history_length)

    @classmethod
    def of_run(cls, data: TrainingData) -> ModelContext:
        """The context of a run's data: its vocabularies, catalogue, time range, columns and history length."""
        return cls.build(data.vocab, data.catalog, data.t_max, data.t_span, data.available_features,
                         AGE_BUCKETS, data.history_length)

    def has(self, column: str) -> bool:
        """Whether the optional data column `column` holds values."""
        return column in self.available

    def to_json(self) -> dict[str, Any]:
        """The sizes and constants worth recording in the export metadata."""
        return {"num_users": len(self.vocab.user_ids), "num_items": len(self.vocab.item_ids),
                "num_catalog_items": len(self.catalog.item_ids), "num_genres": len(self.vocab.genres),
                "t_max": self.t_max, "t_span": self.t_span, "available": sorted(self.available)}
