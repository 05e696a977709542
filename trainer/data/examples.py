"""Model inputs: the user context at a point in time, in the serving contract's feature names.

A context holds only what was known before the request: the watch history and the search
history are built from strictly earlier events of the same user (an event never sees itself,
later events, or events of the same second), so training examples match what serving faces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys_common import contract
from trainer.data.schema import DataError
from trainer.data.vocab import tokenize

ITEM_ID = "item_id"
WATCH_TIME = "watch_time"
RATING = "rating"
CLICKED = "clicked"
_NEVER = np.iinfo(np.int64).max  # a request time after every event: "use the whole history"
IMPRESSION_HISTORY_LENGTH = 50  # impressions kept per context (the most recent), for the previous-impressions count


def event_examples(
    events: pd.DataFrame,
    users: pd.DataFrame,
    history_length: int,
    search_history_length: int,
    history_events: pd.DataFrame | None = None,
    impressions: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """One example per event: the context just before it, and the event as the target.

    Args:
        events: N target events (contract columns).
        users: the user table (users missing from it get unknown demographics).
        history_length: H, watched items kept (the most recent).
        search_history_length: S, query tokens kept (the most recent).
        history_events: where histories come from, together with `events` (default: `events` alone).
        impressions: where impression histories come from (None: every impression history is empty).

    Returns:
        user_id [N] str; watch_history [N, H] str, most recent last, "" pads at the start;
        watch_history_times [N, H] int64 (their times, 0 pads); search_history [N, S] str (same layout);
        impression_history [N, I] str (items shown before, most recent last; I = 1 and "" without impressions);
        gender, occupation, region, language [N] str ("" unknown); age [N] int64 (0 unknown);
        request_time [N] int64 (the event time); item_id [N] str; watch_time [N] float32 and rating [N]
        float32 (NaN = missing).
    """
    _check_lengths(history_length, search_history_length)
    pool = events if history_events is None else _union(history_events, events)
    features = _contexts(
        pool,
        users,
        events["user_id"].to_numpy(dtype=object),
        events["timestamp"].to_numpy(dtype=np.int64),
        history_length,
        search_history_length,
        impressions,
    )
    features[ITEM_ID] = events["item_id"].to_numpy(dtype=object)
    features[WATCH_TIME] = events["watch_time"].to_numpy(dtype=np.float32)
    features[RATING] = events["rating"].to_numpy(dtype=np.float32)
    return features


def impression_examples(
    impressions: pd.DataFrame,
    history_events: pd.DataFrame,
    users: pd.DataFrame,
    history_length: int,
    search_history_length: int,
    shown: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """One example per impression: the user's context just before it was shown, and the shown item.

    Args:
        impressions: N impressions (`schema.validate_impressions` columns).
        history_events: the watches the histories come from (those strictly before each impression count).
        users: the user table.
        history_length: H.
        search_history_length: S.
        shown: the impressions the impression histories come from (default: `impressions`).

    Returns:
        The user inputs of `event_examples` (request_time = the impression's time; impression_history the
        user's earlier impressions), item_id [N] str (the shown item), clicked [N] bool and watch_time [N]
        float32 (0 where not clicked, NaN = unknown).
    """
    _check_lengths(history_length, search_history_length)
    features = _contexts(
        history_events,
        users,
        impressions["user_id"].to_numpy(dtype=object),
        impressions["timestamp"].to_numpy(dtype=np.int64),
        history_length,
        search_history_length,
        impressions if shown is None else shown,
    )
    features[ITEM_ID] = impressions["item_id"].to_numpy(dtype=object)
    features[CLICKED] = impressions["clicked"].to_numpy(dtype=bool)
    features[WATCH_TIME] = impressions["watch_time"].to_numpy(dtype=np.float32)
    return features


def query_examples(
    history_events: pd.DataFrame,
    users: pd.DataFrame,
    user_ids: Sequence[str] | np.ndarray,
    request_time: int,
    history_length: int,
    search_history_length: int,
    impressions: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """One serving request per user: the context is all of that user's events in `history_events`.

    Args:
        history_events: the events known at request time (e.g. the training split).
        users: the user table.
        user_ids: [B] the users to build requests for (unknown ones get an empty history).
        request_time: the request_time of every row (unix seconds).
        history_length: H.
        search_history_length: S.
        impressions: the impressions known at request time, for the impression histories (None: none).

    Returns:
        The user inputs of the serving contract (see `event_examples`), B rows.
    """
    _check_lengths(history_length, search_history_length)
    user_array = np.asarray(user_ids, dtype=object)
    features = _contexts(history_events, users, user_array, np.full(len(user_array), _NEVER), history_length,
                         search_history_length, impressions)
    features[contract.REQUEST_TIME] = np.full(len(user_array), request_time, dtype=np.int64)
    return features


def example_age(timestamps: np.ndarray, t_max: int, t_span: int) -> np.ndarray:
    """The age of a training example (Covington et al. 2016), 0 = now, 1 = the oldest training event.

    Args:
        timestamps: [N] int64 unix seconds.
        t_max: the latest training timestamp.
        t_span: the training time range (> 0).

    Returns:
        [N] float32 in [0, 1]: (t_max - t) / t_span, clipped (events after t_max get 0).
    """
    if t_span <= 0:
        raise DataError(f"example_age: t_span must be > 0, got {t_span}")
    age = (t_max - np.asarray(timestamps, dtype=np.float64)) / float(t_span)
    return np.clip(age, 0.0, 1.0).astype(np.float32)


def _union(history_events: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """`history_events` plus the events it does not hold already (same user, item and time)."""
    key = ["user_id", "item_id", "timestamp"]
    known = pd.MultiIndex.from_frame(history_events[key])
    new = ~pd.MultiIndex.from_frame(events[key]).isin(known)
    return pd.concat([history_events, events[new]], ignore_index=True)


def _check_lengths(history_length: int, search_history_length: int) -> None:
    if history_length <= 0 or search_history_length <= 0:
        raise DataError(
            f"history_length and search_history_length must be > 0, got {history_length}, {search_history_length}"
        )


def _contexts(
    pool: pd.DataFrame,
    users: pd.DataFrame,
    user_ids: np.ndarray,
    times: np.ndarray,
    history_length: int,
    search_history_length: int,
    impressions: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """User inputs for (user_ids[i], times[i]) from the events (and impressions) of `pool` strictly before times[i]."""
    shown_users = np.empty(0, dtype=object) if impressions is None else impressions["user_id"].to_numpy(dtype=object)
    user_codes = pd.Index(pd.unique(np.concatenate([pool["user_id"].to_numpy(dtype=object), user_ids, shown_users])))
    watch_codes = user_codes.get_indexer(pool["user_id"].to_numpy(dtype=object))
    target_codes = user_codes.get_indexer(user_ids)
    watch_times = pool["timestamp"].to_numpy(dtype=np.int64)
    order, chosen = _last_positions(watch_codes, watch_times, target_codes, times, history_length)
    watch_history = _gather(pool["item_id"].to_numpy(dtype=object), order, chosen, "")
    history_times = _gather(watch_times, order, chosen, 0)
    token_users, token_times, tokens = _query_tokens(pool, watch_codes)
    search_history = _last_before(token_users, token_times, tokens, target_codes, times, search_history_length)
    if impressions is None:
        impression_history = np.full((len(user_ids), 1), "", dtype=object)
    else:
        impression_history = _last_before(user_codes.get_indexer(shown_users),
                                          impressions["timestamp"].to_numpy(dtype=np.int64),
                                          impressions["item_id"].to_numpy(dtype=object), target_codes, times,
                                          IMPRESSION_HISTORY_LENGTH)
    features = {
        contract.USER_ID: user_ids,
        contract.WATCH_HISTORY: watch_history,
        contract.WATCH_HISTORY_TIMES: history_times,
        contract.SEARCH_HISTORY: search_history,
        contract.IMPRESSION_HISTORY: impression_history,
        contract.REQUEST_TIME: times.copy(),
    }
    features.update(_demographics(users, user_ids))
    return features


def _last_before(
    owner: np.ndarray,
    time: np.ndarray,
    value: np.ndarray,
    target_owner: np.ndarray,
    target_time: np.ndarray,
    width: int,
) -> np.ndarray:
    """[N, width]: per target, the last `width` values of its owner strictly before its time, "" at the start.

    `owner`/`time`/`value` are rows of a table whose order among equal (owner, time) is kept.
    """
    order, chosen = _last_positions(owner, time, target_owner, target_time, width)
    return _gather(value, order, chosen, "")


def _gather(values: np.ndarray, order: np.ndarray, chosen: np.ndarray, pad: str | int) -> np.ndarray:
    """`values` sorted by `order`, at the positions `chosen` of `_last_positions` (`pad` at the pad position)."""
    return np.append(values[order], np.array([pad], dtype=values.dtype))[chosen]


def _last_positions(owner: np.ndarray, time: np.ndarray, target_owner: np.ndarray, target_time: np.ndarray,
                    width: int) -> tuple[np.ndarray, np.ndarray]:
    """(order [M], chosen [N, width]): the rows sorted by (owner, time), and per target the sorted positions of
    its owner's last `width` rows strictly before its time, M (one past the end: the pad) where there are fewer."""
    order = np.lexsort((time, owner))
    owner, time = owner[order], time[order]
    # Dense time ranks turn the (owner, time) search into one int64 key search.
    distinct_times = np.unique(time)
    span = len(distinct_times) + 1
    keys = owner * span + np.searchsorted(distinct_times, time, side="left")
    target_keys = target_owner * span + np.searchsorted(distinct_times, target_time, side="left")
    owner_start = np.searchsorted(keys, target_owner * span, side="left")
    end = np.searchsorted(keys, target_keys, side="left")
    positions = end[:, None] - width + np.arange(width)[None, :]
    return order, np.where(positions >= owner_start[:, None], positions, len(order))


def _query_tokens(pool: pd.DataFrame, user_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per query token of `pool`, in event order then word order: (user code, time, token)."""
    has_query = pool["query"].notna().to_numpy()
    token_lists = [tokenize(q) for q in pool["query"].to_numpy(dtype=object)[has_query]]
    counts = np.array([len(t) for t in token_lists], dtype=np.int64)
    tokens = np.array([t for ts in token_lists for t in ts], dtype=object)
    owners = np.repeat(user_codes[has_query], counts)
    times = np.repeat(pool["timestamp"].to_numpy(dtype=np.int64)[has_query], counts)
    return owners, times, tokens


def _demographics(users: pd.DataFrame, user_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The user table's features of `user_ids` ("" / 0 for users or columns the table lacks)."""
    index = pd.Index(users["user_id"]).get_indexer(user_ids)
    known = index >= 0
    out = {}
    for name in (contract.GENDER, contract.OCCUPATION, contract.REGION, contract.LANGUAGE):
        column = np.full(len(user_ids), "", dtype=object)
        if name in users.columns:  # a table from before the language column was in the contract has none
            column[known] = users[name].to_numpy(dtype=object)[index[known]]
        out[name] = column
    age = np.zeros(len(user_ids), dtype=np.int64)
    age[known] = users["age"].to_numpy(dtype=np.int64)[index[known]]
    out[contract.AGE] = age
    return out
