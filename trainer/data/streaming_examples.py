"""`event_examples` over a log read chunk by chunk, with bounded memory.

A context needs only each user's last H watched items and last S search tokens before the
request. So between chunks this keeps, per user, the events that can still appear in a later
context: the last H events, the (at most S) events holding the last S query tokens, and
every event of the chunk's last second (a later event of that same second must not see them,
but the events before them must stay visible to it). Each chunk's examples are computed by
`event_examples` itself over those carried events plus the chunk, so the features are
exactly those of the in-memory path, with memory O(users x (H + S) + chunk) instead of O(log).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.data.examples import event_examples
from trainer.data.schema import EVENT_COLUMNS, DataError
from trainer.data.vocab import tokenize


class ContextStream:
    """Turns consecutive chunks of a time-ordered log into their `event_examples`.

    Args:
        users: the user table (demographics; users missing from it get unknown values).
        history_length: H.
        search_history_length: S.
    """

    def __init__(self, users: pd.DataFrame, history_length: int, search_history_length: int) -> None:
        self.users = users
        self.history_length = history_length
        self.search_history_length = search_history_length
        self._carried: pd.DataFrame | None = None
        self._last_time: int | None = None

    @property
    def carried_events(self) -> int:
        """How many past events are held for the contexts of later chunks."""
        return 0 if self._carried is None else len(self._carried)

    def examples(self, events: pd.DataFrame) -> dict[str, np.ndarray]:
        """The examples of `events`, the next chunk of the log.

        Args:
            events: N validated events, sorted by time, none earlier than the previous chunk's last.

        Returns:
            The `event_examples` feature dict of the N events (histories from all earlier events of the log).
        """
        if events.empty:
            return {}
        times = events["timestamp"].to_numpy(dtype=np.int64)
        if self._last_time is not None and times.min() < self._last_time:
            raise DataError(f"ContextStream: a chunk starts at timestamp {times.min()}, before the previous "
                            f"chunk's last event ({self._last_time}); feed the log in time order")
        chunk = events[list(EVENT_COLUMNS)].reset_index(drop=True)
        carried = self._carried if self._carried is not None else chunk.iloc[:0]
        pool = pd.concat([carried, chunk], ignore_index=True)
        if _repeats_carried_event(carried, chunk):
            # event_examples(history_events=...) merges an event logged twice in the same second into one
            # history entry, so a duplicate across the chunk boundary goes the slower, exact way.
            features = event_examples(pool, self.users, self.history_length, self.search_history_length)
            features = {name: values[len(carried):] for name, values in features.items()}
        else:
            features = event_examples(chunk, self.users, self.history_length, self.search_history_length,
                                      history_events=carried)
        self._last_time = int(times.max())
        self._carried = carried_events(pool, self._last_time, self.history_length, self.search_history_length)
        return features


def _repeats_carried_event(carried: pd.DataFrame, chunk: pd.DataFrame) -> bool:
    """Whether the chunk holds an event with the (user, item, second) of a carried one."""
    key = ["user_id", "item_id", "timestamp"]
    same_second = carried[carried["timestamp"] >= chunk["timestamp"].iloc[0]]
    if same_second.empty:
        return False
    return bool(pd.MultiIndex.from_frame(chunk[key]).isin(pd.MultiIndex.from_frame(same_second[key])).any())


def carried_events(pool: pd.DataFrame, last_time: int, history_length: int,
                   search_history_length: int) -> pd.DataFrame:
    """The events of `pool` that a context at `last_time` or later can still use.

    Args:
        pool: events in time order (ties in log order).
        last_time: no later context is earlier than this.
        history_length: H.
        search_history_length: S.

    Returns:
        Per user: every event at `last_time` or later, the last H earlier events and the earlier events
        holding the last S query tokens; in `pool` order.
    """
    earlier = pool["timestamp"].to_numpy(dtype=np.int64) < last_time
    past = pool[earlier]
    rank_from_end = past.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    token_counts = pd.Series([len(tokenize(query)) for query in past["query"].to_numpy(dtype=object)],
                             index=past.index, dtype=np.int64)
    reversed_counts = token_counts.iloc[::-1]
    tokens_after = (reversed_counts.groupby(past["user_id"].iloc[::-1], sort=False).cumsum() - reversed_counts)
    holds_recent_tokens = (token_counts > 0) & (tokens_after.iloc[::-1] < search_history_length)
    keep = ~earlier
    keep[earlier] = (rank_from_end < history_length) | holds_recent_tokens.to_numpy()
    return pool[keep].reset_index(drop=True)
