"""MovieLens (GroupLens) ratings mapped onto the data contract.

Formats:
- ml-100k: u.data (tab: user, item, rating, timestamp), u.item ('|', latin-1: id, title, release
  date, video release date, IMDb URL, 19 genre flags), u.user ('|': id, age, gender, occupation, zip).
- ml-1m: ratings.dat, movies.dat, users.dat ('::', latin-1); age is ml-1m's age code (1, 18, 25,
  35, 45, 50, 56: the lower end of its range), occupation codes become their names.
- ml-20m, ml-25m, ml-32m, ml-latest-small: ratings.csv and movies.csv (UTF-8 with a header);
  no user table beyond the ids; tags, links and the genome are not used.

Mapping decisions:
- watch_time: MovieLens has no watch time, so the documented proxy is `watch_time = rating / 5`,
  read as the fraction of the title watched (1.0 = a full watch, 0.1 = half a star); it is
  the weight of the ranking stage's weighted logistic regression (`watch_time_from_rating`).
- release_time: ml-100k's release date; otherwise (and where that date is missing) January 1st
  of the year in the title, "Toy Story (1995)"; 0 when neither exists.
- region: the first character of the zip code (for US ZIP codes the national area digit 0-9;
  the few foreign postal codes give their first letter).
- genres: the listed genres; ml-100k's "unknown" flag and "(no genres listed)" give no genre.
- MovieLens has no search queries: `query` stays missing.

Files come from `data_dir`, or from `<cache_dir>/<name>/`, where the official archive
(https://files.grouplens.org/datasets/movielens/<name>.zip) is downloaded and verified against a
known checksum when `download` is on. A malformed row, a wrong delimiter or encoding, a missing
file or an empty table raises `DataError` naming the file and the 1-based line; rows are never
dropped. Values are checked against the documented ranges (README files of the releases):
ratings 1-5 whole stars (ml-100k, ml-1m) or 0.5-5 in half stars (the CSV releases), timestamps
>= 0 (and at most `schema.MAX_TIMESTAMP`, the end of year 9999), ids positive integers (read in
canonical form: "01" is user 1), ml-100k genre flags 0/1, ages >= 1, gender M/F, ml-100k release
dates like 01-Jan-1995 or empty. A blank (or whitespace-only) line is an error naming it, except at
the end of a file, where blank lines are counted and logged.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_common.contract import INT64_MAX, INT64_MIN
from trainer.config import MOVIELENS_SOURCES
from trainer.data.schema import (
    MAX_TIMESTAMP,
    DataError,
    Dataset,
    validate_events,
    validate_items,
    validate_users,
)
from trainer.data.table_csv import LineCountingReader, blank_line_error, check_blank_lines, with_missing_rows
from trainer.progress import progress_bar
from trainer.run import LOGGER_NAME

LOGGER = logging.getLogger(LOGGER_NAME)
BASE_URL = "https://files.grouplens.org/datasets/movielens"
DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20
_UNIT_SEPARATOR = "\x1f"  # stands in for ml-1m's two-character "::" so the fast C parser can read it
_DATE_FORMAT = "%d-%b-%Y"  # ml-100k's release dates, e.g. 01-Jan-1995


@dataclasses.dataclass(frozen=True)
class Checksum:
    """The expected digest of an archive ("sha256", or "md5" where only that is published)."""

    algorithm: str
    digest: str


# SHA-256 of the official archives (as recorded by TensorFlow Datasets). GroupLens publishes only
# an MD5 for ml-32m (ml-32m.zip.md5 next to the archive), so that one is checked with MD5.
CHECKSUMS: dict[str, Checksum] = {
    "ml-100k": Checksum("sha256", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    "ml-1m": Checksum("sha256", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
    "ml-20m": Checksum("sha256", "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"),
    "ml-25m": Checksum("sha256", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
    "ml-32m": Checksum("md5", "d472be332d4daa821edc399621853b57"),
    "ml-latest-small": Checksum("sha256", "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"),
}

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
NO_GENRE = {"unknown", "(no genres listed)"}


@dataclasses.dataclass(frozen=True)
class Allowed:
    """The documented values of a numeric column: low <= value <= high, on multiples of `step` (0: any)."""

    column: str
    low: float
    high: float = float("inf")
    step: float = 0.0

    def describe(self) -> str:
        upper = "" if self.high == float("inf") else f" and <= {_number(self.high)}"
        steps = f" in steps of {_number(self.step)}" if self.step else ""
        return f"must be >= {_number(self.low)}{upper}{steps}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclasses.dataclass(frozen=True)
class TableFormat:
    """How one MovieLens file is laid out.

    Attributes:
        file: the file name inside the dataset folder.
        columns: the field names, in file order.
        separator: the field separator ("::" for ml-1m).
        encoding: the text encoding.
        header: the expected first line, or None for files without a header.
        integers, floats: columns that must parse as numbers.
        allowed: the documented ranges of numeric columns.
        ids: id columns, which must be positive integers (kept as strings, without leading zeros).
        dates: text columns holding a date like 01-Jan-1995, or nothing.
        choices: text columns with a closed set of values, {column: values}.
        optional: columns that may be empty. The last column never is: the fast parser fills the
            missing fields of a short row with "", so a required last field is what exposes that row.
    """

    file: str
    columns: tuple[str, ...]
    separator: str
    encoding: str
    header: str | None = None
    integers: tuple[str, ...] = ()
    floats: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    allowed: tuple[Allowed, ...] = ()
    ids: tuple[str, ...] = ()
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    dates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.columns[-1] in self.optional:
            raise ValueError(f"{self.file}: the last column {self.columns[-1]!r} must not be optional")


@dataclasses.dataclass(frozen=True)
class SourceFormat:
    """The files of one MovieLens release (`users` is None where the release has no user table)."""

    ratings: TableFormat
    movies: TableFormat
    users: TableFormat | None

    def files(self) -> list[str]:
        return [t.file for t in (self.ratings, self.movies, self.users) if t is not None]


_TIMESTAMP = Allowed("timestamp", 0, MAX_TIMESTAMP)
_GENDERS = (("gender", ("M", "F")),)
_ML100K = SourceFormat(
    ratings=TableFormat("u.data", ("user", "item", "rating", "timestamp"), "\t", "latin-1",
                        integers=("timestamp",), floats=("rating",), ids=("user", "item"),
                        allowed=(Allowed("rating", 1, 5, 1), _TIMESTAMP)),
    movies=TableFormat("u.item", ("item", "title", "release_date", "video_date", "url") + ML100K_GENRES, "|",
                       "latin-1", integers=ML100K_GENRES, optional=("release_date", "video_date", "url"),
                       ids=("item",), allowed=tuple(Allowed(genre, 0, 1, 1) for genre in ML100K_GENRES),
                       dates=("release_date",)),
    users=TableFormat("u.user", ("user", "age", "gender", "occupation", "zip"), "|", "latin-1",
                      integers=("age",), ids=("user",), allowed=(Allowed("age", 1),), choices=_GENDERS),
)
_ML1M = SourceFormat(
    ratings=TableFormat("ratings.dat", ("user", "item", "rating", "timestamp"), "::", "latin-1",
                        integers=("timestamp",), floats=("rating",), ids=("user", "item"),
                        allowed=(Allowed("rating", 1, 5, 1), _TIMESTAMP)),
    movies=TableFormat("movies.dat", ("item", "title", "genres"), "::", "latin-1", ids=("item",)),
    users=TableFormat("users.dat", ("user", "gender", "age", "occupation", "zip"), "::", "latin-1",
                      integers=("age", "occupation"), ids=("user",),
                      allowed=(Allowed("age", 1), Allowed("occupation", 0, len(ML1M_OCCUPATIONS) - 1)),
                      choices=_GENDERS),
)
_CSV = SourceFormat(
    ratings=TableFormat("ratings.csv", ("user", "item", "rating", "timestamp"), ",", "utf-8",
                        header="userId,movieId,rating,timestamp", integers=("timestamp",), floats=("rating",),
                        ids=("user", "item"), allowed=(Allowed("rating", 0.5, 5, 0.5), _TIMESTAMP)),
    movies=TableFormat("movies.csv", ("item", "title", "genres"), ",", "utf-8", header="movieId,title,genres",
                       ids=("item",)),
    users=None,
)
FORMATS: dict[str, SourceFormat] = {
    "ml-100k": _ML100K,
    "ml-1m": _ML1M,
    "ml-20m": _CSV,
    "ml-25m": _CSV,
    "ml-32m": _CSV,
    "ml-latest-small": _CSV,
}


def load_movielens(
    source: str,
    data_dir: str | None,
    cache_dir: str,
    download: bool,
    *,
    base_url: str = BASE_URL,
    checksums: Mapping[str, Checksum] = CHECKSUMS,
) -> Dataset:
    """Loads a MovieLens release as a validated `Dataset`.

    Args:
        source: one of ml-100k, ml-1m, ml-20m, ml-25m, ml-32m, ml-latest-small.
        data_dir: a folder holding the release's files; None uses `<cache_dir>/<source>/`.
        cache_dir: where archives are downloaded and extracted ("~" is expanded).
        download: fetch the archive when the files are not in the cache.
        base_url: where `<source>.zip` is fetched from (tests point it at a local server).
        checksums: the expected digest of each archive.

    Raises:
        DataError: unknown source, missing files (the message says which files go in which folder),
            a failed or corrupt download, or a malformed file (file name and line number).
    """
    if source not in FORMATS:
        raise DataError(f"unknown MovieLens source {source!r}; choose one of {', '.join(MOVIELENS_SOURCES)}")
    folder = locate(source, data_dir, cache_dir, download, base_url=base_url, checksums=checksums)
    return read_folder(source, folder)


def read_folder(source: str, folder: Path) -> Dataset:
    """Reads the files of `source` from `folder` (which must hold all of them)."""
    layout = FORMATS[source]
    _require_files(source, folder, layout)
    ratings = read_table(folder, layout.ratings)
    movies = read_table(folder, layout.movies)
    raw_users = read_table(folder, layout.users) if layout.users is not None else None
    events = validate_events(_events(ratings), source)
    items = validate_items(_items(source, movies), source)
    users = validate_users(
        _users(source, raw_users) if raw_users is not None else pd.DataFrame({"user_id": events["user_id"].unique()}),
        source,
    )
    if _has_unknown_ids(source, events, users, items):
        users, items = with_missing_rows(users, items, events["user_id"], events["item_id"])
    return Dataset(name=source, events=events, users=users, items=items)


def watch_time_from_rating(rating: pd.Series) -> pd.Series:
    """The watch-time proxy of MovieLens: the fraction of the title watched, rating / 5 (1.0 = 5 stars)."""
    return rating / 5.0


def region_from_zip(zip_codes: pd.Series) -> pd.Series:
    """The region of a zip code: its first character ("" when unknown)."""
    return zip_codes.fillna("").astype(str).str.strip().str[:1]


def release_time_from_title(titles: pd.Series) -> pd.Series:
    """Unix seconds of January 1st of the year in a title like "Toy Story (1995)"; 0 without a year."""
    years = titles.fillna("").str.extract(r"\((\d{4})\)\s*$", expand=False)
    known = years.notna()
    out = pd.Series(np.zeros(len(titles), dtype=np.int64), index=titles.index)
    if known.any():
        dates = pd.to_datetime(years[known] + "-01-01", format="%Y-%m-%d", utc=True)
        out[known] = _unix_seconds(dates)
    return out


def locate(
    source: str,
    data_dir: str | None,
    cache_dir: str,
    download: bool,
    *,
    base_url: str = BASE_URL,
    checksums: Mapping[str, Checksum] = CHECKSUMS,
) -> Path:
    """The folder holding the files of `source`, downloading and extracting the archive if needed."""
    layout = FORMATS[source]
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        _require_files(source, folder, layout)
        return folder
    cache = Path(cache_dir).expanduser()
    folder = cache / source
    if _missing_files(folder, layout) == []:
        return folder
    url = f"{base_url.rstrip('/')}/{source}.zip"
    if not download:
        raise DataError(
            f"{source}: the files {', '.join(layout.files())} are not in {folder} and data.download is off; "
            f"download {url}, unzip it into {cache} (giving {folder}), or set data.data_dir to a folder "
            "holding those files"
        )
    archive = fetch_archive(source, cache, url, checksums.get(source))
    extract_archive(source, archive, cache)
    _require_files(source, folder, layout)
    return folder


def fetch_archive(source: str, cache: Path, url: str, checksum: Checksum | None) -> Path:
    """Downloads `url` into `<cache>/<source>.zip` (unless a verified copy is there) and verifies it.

    Raises:
        DataError: no checksum is known, the download failed, or the digest does not match (the
            file is deleted).
    """
    if checksum is None:
        raise DataError(f"{source}: no known checksum for the archive; cannot verify a download of {url}")
    target = cache / f"{source}.zip"
    if target.is_file():
        if _digest(target, checksum.algorithm) == checksum.digest:
            return target
        LOGGER.warning("%s: cached archive %s fails its checksum; downloading it again", source, target)
        target.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    LOGGER.info("%s: downloading %s into %s", source, url, cache)
    handle, partial_name = tempfile.mkstemp(prefix=f".{source}.", suffix=".part", dir=cache)
    partial = Path(partial_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _download(url, out, checksum.algorithm, source, cache)
        if digest != checksum.digest:
            raise DataError(
                f"{source}: the archive downloaded from {url} has {checksum.algorithm} {digest}, expected "
                f"{checksum.digest}; the corrupt download was deleted"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def extract_archive(source: str, archive: Path, cache: Path) -> Path:
    """Unzips `archive` (whose entries lie under `<source>/`) into `cache`; returns `<cache>/<source>`."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = bundle.namelist()
            outside = [n for n in names if not n.startswith(f"{source}/") or ".." in Path(n).parts]
            if outside:
                raise DataError(f"{source}: {archive} holds entries outside the folder {source}/: {outside[:3]}")
            staging = Path(tempfile.mkdtemp(prefix=f".{source}.", dir=cache))
            try:
                bundle.extractall(staging)
                target = cache / source
                if target.exists():
                    shutil.rmtree(target)
                (staging / source).replace(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except zipfile.BadZipFile as error:
        raise DataError(f"{source}: {archive} is not a valid zip archive ({error})") from None
    return cache / source


def read_table(folder: Path, table: TableFormat) -> pd.DataFrame:
    """Reads one file: numbers parsed, strings kept; any defect raises DataError with the file and line.

    The fast path is pandas' C parser; when it fails or finds an empty required field, a
    line-by-line scan finds and names the first bad line. A blank line is an error naming it, but
    blank lines at the end of the file are counted and logged; values outside the documented ranges
    (`TableFormat.allowed`, `ids`, `choices`) are errors naming the line.
    """
    path = folder / table.file
    if not path.is_file():
        raise DataError(f"{path} is missing")
    if table.header:
        _check_header(path, table)
    try:
        with warnings.catch_warnings():
            # Rows longer than the header would be cut with only a warning: make that an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame, lines = _parse(path, table)
    except (ValueError, OverflowError, pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as error:
        raise _diagnose(path, table, str(error)) from None  # EmptyDataError is a ValueError too
    if frame.empty:
        raise DataError(f"{path}: the table is empty (no data rows)")
    required_text = [c for c in table.columns
                     if c not in table.optional and c not in table.integers and c not in table.floats]
    empty_text = any((frame[c].str.strip() == "").any() for c in required_text)
    if empty_text or any(not np.isfinite(frame[c].to_numpy()).all() for c in table.floats):
        raise _diagnose(path, table, "an empty or invalid field")
    check_blank_lines(path, len(frame), header_lines=1 if table.header else 0, log=LOGGER, lines=lines)
    _check_values(path, table, frame)
    for column in table.ids:
        frame[column] = frame[column].str.lstrip("0")  # checked to be digits, not all zeros
    return frame


def _check_values(path: Path, table: TableFormat, frame: pd.DataFrame) -> None:
    """Raises DataError naming the first line whose value is outside its column's documented values.

    Called once blank lines are ruled out (but trailing ones), so row i is line i + 1 (+1 with a header).
    """
    first_line = 2 if table.header else 1
    checks: list[tuple[str, np.ndarray, str]] = []
    for allowed in table.allowed:
        values = frame[allowed.column].to_numpy(dtype=np.float64)
        bad = (values < allowed.low) | (values > allowed.high)
        if allowed.step:
            bad |= ~np.isclose(values / allowed.step, np.round(values / allowed.step))
        checks.append((allowed.column, bad, allowed.describe()))
    for column in table.ids:
        checks.append((column, ~frame[column].str.fullmatch(r"0*[1-9]\d*").to_numpy(dtype=bool),
                       "must be a positive integer id"))
    for column, values in table.choices:
        checks.append((column, ~frame[column].isin(values).to_numpy(), f"must be one of {', '.join(values)}"))
    for column in table.dates:
        bad_date = (frame[column].str.strip() != "") & _dates(frame[column]).isna()
        checks.append((column, bad_date.to_numpy(), "must be a date like 01-Jan-1995, or empty"))
    for column, bad, rule in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = frame[column].iloc[row]
            value = value.item() if isinstance(value, np.generic) else value
            raise DataError(f"{path} line {row + first_line}: field {column!r} {rule}, found {value!r} "
                            f"({int(bad.sum())} such rows)")


def _parse(path: Path, table: TableFormat) -> tuple[pd.DataFrame, int]:
    """The table as pandas' C parser reads it, and the file's lines (a last one without a newline included),
    counted in the same pass."""
    if len(table.separator) > 1:
        text = _read_text(path, table.encoding)
        frame = _read_csv(io.StringIO(text.replace(table.separator, _UNIT_SEPARATOR)), table, _UNIT_SEPARATOR)
        return frame, text.count("\n") + (text[-1:] not in ("", "\n"))
    with path.open("rb") as raw:
        counter = LineCountingReader(raw)
        frame = _read_csv(io.BufferedReader(counter), table, table.separator)
    return frame, counter.lines


def _read_csv(source: io.StringIO | io.BufferedReader, table: TableFormat, separator: str) -> pd.DataFrame:
    dtypes = {c: np.int64 if c in table.integers else np.float64 if c in table.floats else str for c in table.columns}
    return pd.read_csv(
        source,
        sep=separator,
        header=None,
        names=list(table.columns),
        index_col=False,
        dtype=dtypes,
        na_filter=False,
        skip_blank_lines=True,
        skiprows=1 if table.header else 0,
        encoding=table.encoding,
        quoting=csv.QUOTE_MINIMAL if table.header else csv.QUOTE_NONE,
        engine="c",
    )


def _read_text(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid {encoding} ({error.reason})") from None


def _diagnose(path: Path, table: TableFormat, parser_message: str) -> DataError:
    """The error for the first bad line of `path` (a line-by-line scan; only run when parsing failed)."""
    data_lines = whitespace_line = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode(table.encoding).rstrip("\r\n")
            except UnicodeDecodeError as error:
                return DataError(f"{path} line {number}: not valid {table.encoding} ({error.reason}); "
                                 f"the file must be {table.encoding}-encoded")
            if table.header and number == 1:
                continue
            if not line.strip():
                whitespace_line = whitespace_line or (number if line else 0)
                continue
            data_lines += 1
            problem = _line_problem(line, table)
            if problem:
                return DataError(f"{path} line {number}: {problem}")
    if data_lines == 0:
        return DataError(f"{path}: the table is empty (no data rows)")
    if whitespace_line:  # the parser reads a line of separators as a row of empty fields
        return blank_line_error(path, whitespace_line)
    return DataError(f"{path}: cannot parse the file ({parser_message})")


def _line_problem(line: str, table: TableFormat) -> str | None:
    fields = next(csv.reader([line])) if table.header else line.split(table.separator)
    if len(fields) != len(table.columns):
        return (f"expected {len(table.columns)} fields separated by {table.separator!r}, found {len(fields)}: "
                f"{line[:80]!r}")
    for column, value in zip(table.columns, fields):
        text = value.strip()
        if not text:
            if column not in table.optional:
                return f"field {column!r} is empty"
        elif column in table.integers and (problem := _integer_problem(text, column, table)):
            return f"field {column!r} {problem}, found {value!r}"
        elif column in table.floats and not _is_finite_number(text):
            return f"field {column!r} must be a number, found {value!r}"
    return None


def _integer_problem(text: str, column: str, table: TableFormat) -> str | None:
    """Why `text` is not a valid integer of `column` (its documented range, then int64), or None."""
    if not re.fullmatch(r"[+-]?\d+", text):
        return "must be an integer"
    value = int(text)
    for allowed in table.allowed:
        if allowed.column == column and not allowed.low <= value <= allowed.high:
            return allowed.describe()
    if not INT64_MIN <= value <= INT64_MAX:
        return f"must be an integer from {INT64_MIN} to {INT64_MAX}"
    return None


def _is_finite_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def _check_header(path: Path, table: TableFormat) -> None:
    with path.open("rb") as handle:
        first = handle.readline().decode(table.encoding, errors="replace").rstrip("\r\n").lstrip("\ufeff")
    if not first.strip():
        raise DataError(f"{path}: the table is empty (expected the header {table.header!r} on line 1)")
    if first != table.header:
        raise DataError(f"{path} line 1: expected the header {table.header!r}, found {first[:80]!r} "
                        f"(fields must be separated by {table.separator!r})")


def _events(ratings: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ratings["user"],
            "item_id": ratings["item"],
            "timestamp": ratings["timestamp"],
            "rating": ratings["rating"],
            "watch_time": watch_time_from_rating(ratings["rating"]),
        }
    )


def _items(source: str, movies: pd.DataFrame) -> pd.DataFrame:
    if source == "ml-100k":
        flags = movies[list(ML100K_GENRES)].to_numpy() > 0
        genres = [[g for g, on in zip(ML100K_GENRES, row) if on and g not in NO_GENRE] for row in flags]
        dated = _dates(movies["release_date"])
        release = release_time_from_title(movies["title"])
        release[dated.notna()] = _unix_seconds(dated[dated.notna()])
    else:
        genres = [[g for g in value.split("|") if g and g not in NO_GENRE] for value in movies["genres"]]
        release = release_time_from_title(movies["title"])
    return pd.DataFrame({"item_id": movies["item"], "title": movies["title"], "genres": genres,
                         "release_time": release})


def _users(source: str, users: pd.DataFrame) -> pd.DataFrame:
    occupation = users["occupation"]
    if source == "ml-1m":
        codes = users["occupation"].to_numpy()
        if ((codes < 0) | (codes >= len(ML1M_OCCUPATIONS))).any():
            bad = int(codes[(codes < 0) | (codes >= len(ML1M_OCCUPATIONS))][0])
            raise DataError(f"{source}: users.dat has the unknown occupation code {bad} (valid: 0-20)")
        occupation = pd.Series(np.array(ML1M_OCCUPATIONS, dtype=object)[codes])
    return pd.DataFrame({"user_id": users["user"], "gender": users["gender"], "age": users["age"],
                         "occupation": occupation, "region": region_from_zip(users["zip"])})


def _dates(text: pd.Series) -> pd.Series:
    """Dates like 01-Jan-1995 in UTC; NaT for empty text (and for malformed text, refused by `_check_values`)."""
    return pd.to_datetime(text.str.strip(), format=_DATE_FORMAT, errors="coerce", utc=True)


def _unix_seconds(dates: pd.Series) -> np.ndarray:
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _missing_files(folder: Path, layout: SourceFormat) -> list[str]:
    return [name for name in layout.files() if not (folder / name).is_file()]


def _require_files(source: str, folder: Path, layout: SourceFormat) -> None:
    missing = _missing_files(folder, layout)
    if missing:
        raise DataError(
            f"{source}: missing file(s) {', '.join(str(folder / m) for m in missing)}; the folder {folder} must hold "
            f"{', '.join(layout.files())} (from {BASE_URL}/{source}.zip)"
        )


def _has_unknown_ids(source: str, events: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> bool:
    """Logs and reports rated items missing from the movie table and users missing from the user table."""
    unknown_items = events.loc[~events["item_id"].isin(items["item_id"]), "item_id"].nunique()
    unknown_users = events.loc[~events["user_id"].isin(users["user_id"]), "user_id"].nunique()
    if unknown_items or unknown_users:
        LOGGER.warning("%s: %d rated items are not in the movie table and %d users not in the user table; "
                       "they get unknown features", source, unknown_items, unknown_users)
    return bool(unknown_items or unknown_users)


def _download(url: str, out: io.BufferedWriter, algorithm: str, source: str, cache: Path) -> str:
    """Streams `url` into `out`; returns the hex digest."""
    hasher = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                progress_bar(_content_length(response), f"downloading {source}", "B", unit_scale=True) as bar:
            while chunk := response.read(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as error:
        raise DataError(
            f"{source}: could not download {url} ({error}); on a machine without internet access, download it "
            f"elsewhere and unzip it into {cache} (giving {cache / source} with {', '.join(FORMATS[source].files())}), "
            "or set data.data_dir to a folder holding those files"
        ) from None
    return hasher.hexdigest()


def _content_length(response: Any) -> int | None:
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
