"""`event_examples` over a log read chunk by chunk, with bounded memory.

A context needs only each user's last H watched items and last S search tokens before the
request. So between chunks this keeps, per user, the events that can still appear in a later
context: the last H events, the (at most S) events holding the last S query tokens, and
every event of the chunk's last second (a later event of that same second must not see them,
but the events before them must stay visible to it). Each chunk's examples are computed by
`event_examples` itself over those carried events plus the chunk, so the features are
exactly those of the in-memory path, with memory O(users x (H + S) + chunk) instead of O(log).

A log with impressions is two time-ordered streams, the watches and the impressions. `time_slices`
cuts both at the same times, so that every slice's rows are later than all rows of the slices before
it, and `ImpressionContextStream` turns each slice into the examples of its watches (`event_examples`,
with impression histories) and of its impressions (`impression_examples`). Between slices it keeps,
per user, what `carried_events` keeps and the last I impressions (I = IMPRESSION_HISTORY_LENGTH):
memory O(users x (H + S + I) + chunk).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from trainer.data.examples import IMPRESSION_HISTORY_LENGTH, RATING, event_examples, impression_examples
from trainer.data.schema import EVENT_COLUMNS, IMPRESSION_COLUMNS, DataError
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


class ImpressionContextStream:
    """Turns consecutive time slices of a log with impressions into their event and impression examples.

    Args:
        users: the user table.
        history_length: H.
        search_history_length: S.
    """

    def __init__(self, users: pd.DataFrame, history_length: int, search_history_length: int) -> None:
        self.users = users
        self.history_length = history_length
        self.search_history_length = search_history_length
        self._events = pd.DataFrame({column: [] for column in EVENT_COLUMNS})
        self._shown = pd.DataFrame({column: [] for column in IMPRESSION_COLUMNS})
        self._last_time: int | None = None

    @property
    def carried_rows(self) -> int:
        """How many past events and impressions are held for the contexts of later slices."""
        return len(self._events) + len(self._shown)

    def examples(self, events: pd.DataFrame, impressions: pd.DataFrame
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The examples of the next slice of the log (`time_slices`).

        Args:
            events: the slice's validated events, sorted by time.
            impressions: the slice's validated impressions, sorted by time; every row of both is later than
                all rows of the previous slices.

        Returns:
            (`event_examples` of the events, with impression histories; `impression_examples` of the
            impressions, with rating [N] NaN), each {} when its table is empty.
        """
        times = np.concatenate([events["timestamp"].to_numpy(dtype=np.int64),
                                impressions["timestamp"].to_numpy(dtype=np.int64)])
        if not len(times):
            return {}, {}
        if self._last_time is not None and times.min() <= self._last_time:
            raise DataError(f"ImpressionContextStream: a slice starts at timestamp {times.min()}, not after the "
                            f"previous slice's last row ({self._last_time}); cut the log with time_slices")
        events = events[list(EVENT_COLUMNS)].reset_index(drop=True)
        impressions = impressions[list(IMPRESSION_COLUMNS)].reset_index(drop=True)
        watched = pd.concat([self._events, events], ignore_index=True) if len(self._events) else events
        shown = pd.concat([self._shown, impressions], ignore_index=True) if len(self._shown) else impressions
        event_features: dict[str, np.ndarray] = {}
        if len(events):
            event_features = event_examples(events, self.users, self.history_length, self.search_history_length,
                                            history_events=self._events if len(self._events) else None,
                                            impressions=shown)
        impression_features: dict[str, np.ndarray] = {}
        if len(impressions):
            impression_features = impression_examples(impressions, watched, self.users, self.history_length,
                                                      self.search_history_length, shown=shown)
            impression_features[RATING] = np.full(len(impressions), np.nan, dtype=np.float32)
        self._last_time = int(times.max())
        self._events = carried_events(watched, self._last_time, self.history_length, self.search_history_length)
        self._shown = shown.groupby("user_id", sort=False).tail(IMPRESSION_HISTORY_LENGTH).reset_index(drop=True)
        return event_features, impression_features


def time_slices(events: Iterator[pd.DataFrame], impressions: Iterator[pd.DataFrame]
                ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Two time-ordered streams of chunks cut into slices at common times.

    Args:
        events: chunks of one stream (each sorted by time, none earlier than the one before).
        impressions: chunks of the other.

    Yields:
        (events, impressions) of consecutive time ranges: every row of a slice is later than every row of
        the slices before it; each stream's rows keep their order. A slice holds at most about one chunk
        of each stream more than the rows of a single second.
    """
    streams = [_Buffered(events, EVENT_COLUMNS), _Buffered(impressions, IMPRESSION_COLUMNS)]
    while True:
        for stream in streams:
            stream.fill()
        live = [stream for stream in streams if not stream.done]
        if not live:
            first, second = (stream.take_before(None) for stream in streams)
            if len(first) or len(second):
                yield first, second
            return
        cut = min(stream.last_time for stream in live)
        first, second = (stream.take_before(cut) for stream in streams)
        if len(first) or len(second):
            yield first, second
        for stream in live:
            if stream.last_time == cut:
                stream.pull()


class _Buffered:
    """A stream of time-ordered chunks, with the rows read but not yet handed on."""

    def __init__(self, chunks: Iterator[pd.DataFrame], columns: tuple[str, ...]) -> None:
        self.chunks = chunks
        self.rows = pd.DataFrame({column: [] for column in columns})
        self.done = False

    @property
    def last_time(self) -> int:
        return int(self.rows["timestamp"].iloc[-1])

    def fill(self) -> None:
        """Reads until rows are buffered or the stream ends."""
        while not self.done and self.rows.empty:
            self.pull()

    def pull(self) -> None:
        chunk = next(self.chunks, None)
        if chunk is None:
            self.done = True
        elif self.rows.empty:
            self.rows = chunk.reset_index(drop=True)
        else:
            self.rows = pd.concat([self.rows, chunk], ignore_index=True)

    def take_before(self, cut: int | None) -> pd.DataFrame:
        """Removes and returns the buffered rows earlier than `cut` (None: all of them)."""
        times = self.rows["timestamp"].to_numpy(dtype=np.int64)
        split = len(times) if cut is None else int(np.searchsorted(times, cut, side="left"))
        taken, self.rows = self.rows.iloc[:split].reset_index(drop=True), self.rows.iloc[split:].reset_index(drop=True)
        return taken
