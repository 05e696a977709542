"""MovieLens loaders: real ml-100k/ml-1m files, every release format, malformed files, downloads."""

from __future__ import annotations

import datetime
import functools
import hashlib
import http.server
import re
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.data.movielens import Checksum, load_movielens
from trainer.data.schema import DataError

LAST_SECOND = int(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc).timestamp())
TIMESTAMP_RULE = f"must be >= 0 and <= {LAST_SECOND}"
CSV_SOURCES = ("ml-20m", "ml-25m", "ml-32m", "ml-latest-small")
RATINGS_CSV = (
    "userId,movieId,rating,timestamp\n"
    "1,10,4.0,1100000000\n"
    "1,20,3.5,1100000100\n"
    "2,10,5.0,1000000000\n"
    "2,30,0.5,1200000000\n"
    "3,40,2.0,1300000000\n"
)
MOVIES_CSV = (
    "movieId,title,genres\n"
    "10,\"American President, The (1995)\",Comedy|Drama|Romance\n"
    "20,Amélie (Fabuleux destin d'Amélie Poulain) (2001),Comedy|Romance\n"
    "30,Untitled,(no genres listed)\n"
    "40,Heat (1995) ,Action|Crime\n"
)


def _write_csv_release(folder: Path, ratings: str = RATINGS_CSV, movies: str = MOVIES_CSV) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings, encoding="utf-8")
    (folder / "movies.csv").write_text(movies, encoding="utf-8")
    return folder


# --- real data ---------------------------------------------------------------------------------


def test_ml100k_counts_and_contract(ml100k_dir: Path, tmp_path: Path) -> None:
    data = load_movielens("ml-100k", str(ml100k_dir), str(tmp_path), download=False)
    events, users, items = data.events, data.users, data.items
    assert len(events) == 100_000 and events["user_id"].nunique() == 943 and events["item_id"].nunique() == 1682
    assert len(users) == 943 and len(items) == 1682
    assert list(events.columns) == ["user_id", "item_id", "timestamp", "rating", "watch_time", "query"]
    assert events["timestamp"].dtype == np.int64 and events["rating"].dtype == np.float64
    assert isinstance(events["user_id"].iloc[0], str) and events["query"].isna().all()
    np.testing.assert_allclose(events["watch_time"], events["rating"] / 5)
    raw = pd.read_csv(ml100k_dir / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    assert events["rating"].sum() == raw["r"].sum() and events["timestamp"].sum() == raw["t"].sum()
    toy = items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story (1995)" and toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy["release_time"] == 788918400  # 01-Jan-1995
    assert items.set_index("item_id").loc["267", "genres"] == []  # only the "unknown" flag
    user = users.set_index("user_id").loc["2"]
    assert (user["age"], user["gender"], user["occupation"], user["region"]) == (53, "F", "other", "9")


def test_ml1m_without_ratings_names_the_missing_file(ml1m_dir: Path, tmp_path: Path) -> None:
    if (ml1m_dir / "ratings.dat").exists():
        pytest.skip("this copy of ml-1m has ratings.dat")
    with pytest.raises(DataError, match=r"ratings\.dat") as error:
        load_movielens("ml-1m", str(ml1m_dir), str(tmp_path), download=True)
    assert str(ml1m_dir) in str(error.value)


def test_ml1m_users_and_movies(ml1m_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    for name in ("users.dat", "movies.dat"):
        shutil.copy(ml1m_dir / name, folder / name)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n6040::3952::2::956715518\n2::1::4::978298413\n")
    data = load_movielens("ml-1m", str(folder), str(tmp_path), download=False)
    assert len(data.events) == 3 and len(data.users) == 6040 and len(data.items) == 3883
    users = data.users.set_index("user_id")
    assert (users.loc["1", "gender"], users.loc["1", "age"], users.loc["1", "occupation"]) == ("F", 1, "K-12 student")
    assert users.loc["2", "age"] == 56 and users.loc["2", "region"] == "7"
    movies = data.items.set_index("item_id")
    assert movies.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert movies.loc["1", "release_time"] == 788918400  # the title year, 1995
    np.testing.assert_allclose(data.events["watch_time"], data.events["rating"] / 5)


# --- the CSV releases ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", CSV_SOURCES)
def test_csv_release(source: str, tmp_path: Path) -> None:
    folder = _write_csv_release(tmp_path / source)
    data = load_movielens(source, str(folder), str(tmp_path / "cache"), download=False)
    assert data.name == source and len(data.events) == 5
    assert list(data.events["user_id"]) == ["2", "1", "1", "2", "3"]  # sorted by time
    assert sorted(data.users["user_id"]) == ["1", "2", "3"] and (data.users["gender"] == "").all()
    items = data.items.set_index("item_id")
    assert items.loc["10", "title"] == "American President, The (1995)"
    assert items.loc["10", "genres"] == ["Comedy", "Drama", "Romance"]
    assert items.loc["20", "title"].startswith("Amélie") and items.loc["30", "genres"] == []
    assert items.loc["30", "release_time"] == 0 and items.loc["40", "release_time"] == 788918400
    np.testing.assert_allclose(data.events["watch_time"], [1.0, 0.8, 0.7, 0.1, 0.4])


def test_rated_items_missing_from_the_movie_table_are_kept(tmp_path: Path) -> None:
    folder = _write_csv_release(tmp_path / "ml-latest-small", ratings=RATINGS_CSV + "4,99,1.0,1400000000\n")
    data = load_movielens("ml-latest-small", str(folder), str(tmp_path), download=False)
    assert len(data.events) == 6 and data.items.set_index("item_id").loc["99", "title"] == ""


# --- malformed files ----------------------------------------------------------------------------


def _ml100k_copy(ml100k_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for name in ("u.data", "u.item", "u.user"):
        shutil.copy(ml100k_dir / name, folder / name)
    return folder


def _replace_line(path: Path, number: int, text: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = text
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(("file", "line", "text", "message"), [
    ("u.data", 7, b"1\t2\t3\t4\t5", "expected 4 fields"),
    ("u.data", 3, b"1\t2", "expected 4 fields"),
    ("u.data", 12, b"1\t2\tfive\t881250949", "'rating' must be a number"),
    ("u.data", 99999, b"1\t2\t3\t88125.5", "'timestamp' must be an integer"),
    ("u.data", 5, b"\t2\t3\t881250949", "'user' is empty"),
    ("u.user", 10, b"10|53|M|lawyer", "expected 5 fields"),
    ("u.item", 1682, b"1682|Scream of Stone (1991)|08-Mar-1996||http://x|0|0|0", "expected 24 fields"),
])
def test_malformed_row_names_file_and_line(
    ml100k_dir: Path, tmp_path: Path, file: str, line: int, text: bytes, message: str
) -> None:
    folder = _ml100k_copy(ml100k_dir, tmp_path)
    _replace_line(folder / file, line, text)
    with pytest.raises(DataError, match=message) as error:
        load_movielens("ml-100k", str(folder), str(tmp_path), download=False)
    assert f"{file} line {line}:" in str(error.value)


@pytest.mark.parametrize(("ratings", "message"), [
    ("1::1193::5::978300760\n2::1::x::978298413\n", "ratings.dat line 2: field 'rating' must be a number"),
    ("1::1193::5::978300760\n2|1|4|978298413\n", "ratings.dat line 2: expected 4 fields separated by '::', found 1"),
    ("1::1193::5::978300760::7\n", "ratings.dat line 1: expected 4 fields separated by '::', found 5"),
    ("\n", "ratings.dat: the table is empty"),
    ("1::1193::5::99999999999999999999\n", f"ratings.dat line 1: field 'timestamp' {TIMESTAMP_RULE}, found '9999"),
    ("1::1193::5::978300760\n2::1193::4::1000000000000000\n",
     f"ratings.dat line 2: field 'timestamp' {TIMESTAMP_RULE}, found 1000000000000000"),
])
def test_malformed_ml1m(tmp_path: Path, ratings: str, message: str) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n", encoding="latin-1")
    (folder / "movies.dat").write_text("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n", encoding="latin-1")
    (folder / "ratings.dat").write_text(ratings, encoding="latin-1")
    with pytest.raises(DataError) as error:
        load_movielens("ml-1m", str(folder), str(tmp_path), download=False)
    assert message in str(error.value)


def test_wrong_delimiter(ml100k_dir: Path, tmp_path: Path) -> None:
    folder = _ml100k_copy(ml100k_dir, tmp_path)
    (folder / "u.data").write_text((ml100k_dir / "u.data").read_text().replace("\t", ","))
    with pytest.raises(DataError, match=r"u\.data line 1: expected 4 fields separated by '\\t', found 1"):
        load_movielens("ml-100k", str(folder), str(tmp_path), download=False)


@pytest.mark.parametrize(("ratings", "movies", "message"), [
    (RATINGS_CSV.replace(",", ";"), MOVIES_CSV, r"ratings\.csv line 1: expected the header"),
    (RATINGS_CSV.replace("1,10,4.0,1100000000", "1,10,4.0,1100000000,9"), MOVIES_CSV,
     r"ratings\.csv line 2: expected 4 fields separated by ',', found 5"),
    (RATINGS_CSV, MOVIES_CSV.replace("Heat (1995) ,Action|Crime", "Heat,(1995),Action"),
     r"movies\.csv line 5: expected 3 fields"),
    (RATINGS_CSV + "\n\n7,10,4.0\n", MOVIES_CSV, r"ratings\.csv line 9: expected 4 fields"),
    (RATINGS_CSV.replace("3.5", "3,5"), MOVIES_CSV, r"ratings\.csv line 3: expected 4 fields"),
    (RATINGS_CSV.replace("2.0", "nan"), MOVIES_CSV, r"ratings\.csv line 6: field 'rating' must be a number"),
    ("userId,movieId,rating,timestamp\n", MOVIES_CSV, r"ratings\.csv: the table is empty"),
    ("", MOVIES_CSV, r"ratings\.csv: the table is empty"),
])
def test_malformed_csv(tmp_path: Path, ratings: str, movies: str, message: str) -> None:
    folder = _write_csv_release(tmp_path / "ml-20m", ratings=ratings, movies=movies)
    with pytest.raises(DataError, match=message):
        load_movielens("ml-20m", str(folder), str(tmp_path), download=False)


def test_bad_encoding_names_the_line(tmp_path: Path) -> None:
    folder = _write_csv_release(tmp_path / "ml-25m")
    (folder / "movies.csv").write_bytes(MOVIES_CSV.encode("latin-1"))  # "Amélie" on line 3 is not UTF-8
    with pytest.raises(DataError, match=r"movies\.csv line 3: not valid utf-8"):
        load_movielens("ml-25m", str(folder), str(tmp_path), download=False)


def test_a_blank_line_between_rows_is_an_error_naming_it(tmp_path: Path) -> None:
    folder = _write_csv_release(tmp_path / "ml-32m", ratings=RATINGS_CSV.replace("\n2,10", "\n\n2,10"))
    with pytest.raises(DataError, match=r"ratings\.csv line 4: a blank line"):
        load_movielens("ml-32m", str(folder), str(tmp_path), download=False)


@pytest.mark.parametrize(("end", "blank_lines"), [("\n\r\n", 2), ("\n \t\r\n  ", 3)])
def test_blank_lines_at_the_end_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, end: str, blank_lines: int
) -> None:
    folder = _write_csv_release(tmp_path / "ml-32m", ratings=RATINGS_CSV + end)
    with caplog.at_level("WARNING"):
        assert len(load_movielens("ml-32m", str(folder), str(tmp_path), download=False).events) == 5
    assert f"ratings.csv: ignored {blank_lines} blank line(s) at the end of the file" in caplog.text


@pytest.mark.parametrize(("file", "line", "text", "message"), [
    ("u.data", 50000, b"1\t2\t99\t881250949", "field 'rating' must be >= 1 and <= 5 in steps of 1, found 99.0"),
    ("u.data", 7, b"1\t2\t0\t881250949", "field 'rating' must be >= 1 and <= 5"),
    ("u.data", 8, b"1\t2\t3.5\t881250949", "field 'rating' must be >= 1 and <= 5 in steps of 1, found 3.5"),
    ("u.data", 9, b"1\t2\t3\t-5", f"field 'timestamp' {TIMESTAMP_RULE}, found -5"),
    ("u.data", 10, b"-1\t2\t3\t881250949", "field 'user' must be a positive integer id, found '-1'"),
    ("u.data", 11, b"1\tx7\t3\t881250949", "field 'item' must be a positive integer id, found 'x7'"),
    ("u.data", 4, b"", "a blank line"),
    ("u.data", 4, b"   ", "a blank line"),
    ("u.data", 6, b" \t ", "a blank line"),
    ("u.data", 13, b"1\t2\t3\t1000000000000000", f"field 'timestamp' {TIMESTAMP_RULE}, found 1000000000000000"),
    ("u.data", 14, f"1\t2\t3\t{LAST_SECOND + 1}".encode(), f"field 'timestamp' {TIMESTAMP_RULE}, found"),
    ("u.data", 15, b"1\t2\t3\t99999999999999999999",
     f"field 'timestamp' {TIMESTAMP_RULE}, found '99999999999999999999'"),
    ("u.data", 16, b"1\t2\t3\t-99999999999999999999", f"field 'timestamp' {TIMESTAMP_RULE}, found '-9999"),
    ("u.user", 5, b"5|99999999999999999999|F|other|15213",
     f"field 'age' must be an integer from {-2**63} to {2**63 - 1}, found '99999999999999999999'"),
    ("u.item", 3, b"3|Four Rooms (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|99999999999999999999|0|0",
     "field 'Thriller' must be >= 0 and <= 1 in steps of 1, found '99999999999999999999'"),
    ("u.item", 4, b"4|Get Shorty (1995)|99-Foo-1995||http://x|0|1|0|0|0|1|0|0|1|0|0|0|0|0|0|0|0|0|0",
     "field 'release_date' must be a date like 01-Jan-1995, or empty, found '99-Foo-1995'"),
    ("u.user", 3, b"3|23|X|writer|32067", "field 'gender' must be one of M, F, found 'X'"),
    ("u.user", 4, b"4|0|M|technician|43537", "field 'age' must be >= 1, found 0"),
    ("u.item", 2, b"2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|2|0|0",
     "field 'Thriller' must be >= 0 and <= 1"),
])
def test_values_outside_the_documented_ranges_name_file_and_line(
    ml100k_dir: Path, tmp_path: Path, file: str, line: int, text: bytes, message: str
) -> None:
    folder = _ml100k_copy(ml100k_dir, tmp_path)
    _replace_line(folder / file, line, text)
    with pytest.raises(DataError) as error:
        load_movielens("ml-100k", str(folder), str(tmp_path), download=False)
    assert f"{file} line {line}: {message}" in str(error.value)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("4.0", "4.2", "line 2: field 'rating' must be >= 0.5 and <= 5 in steps of 0.5, found 4.2"),
    ("0.5", "0.0", "line 5: field 'rating' must be >= 0.5"),
    ("5.0", "5.5", "line 4: field 'rating' must be >= 0.5 and <= 5"),
    ("1200000000", "-1200000000", "line 5: field 'timestamp' must be >= 0"),
    ("1200000000", "9223372036854775808", f"line 5: field 'timestamp' {TIMESTAMP_RULE}, found '9223372036854775808'"),
])
def test_csv_ratings_outside_the_half_star_scale_are_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    folder = _write_csv_release(tmp_path / "ml-latest-small", ratings=RATINGS_CSV.replace(old, new, 1))
    with pytest.raises(DataError, match=rf"ratings\.csv {re.escape(message)}"):
        load_movielens("ml-latest-small", str(folder), str(tmp_path), download=False)


def test_ids_with_leading_zeros_are_the_same_ids(ml100k_dir: Path, tmp_path: Path) -> None:
    original = load_movielens("ml-100k", str(ml100k_dir), str(tmp_path), download=False)
    folder = _ml100k_copy(ml100k_dir, tmp_path)
    for file, id_fields in (("u.data", 2), ("u.item", 1), ("u.user", 1)):
        separator = b"\t" if file == "u.data" else b"|"
        fields = (folder / file).read_bytes().split(b"\n", 1)[0].split(separator)
        fields[:id_fields] = [b"00" + field for field in fields[:id_fields]]
        _replace_line(folder / file, 1, separator.join(fields))
    padded = load_movielens("ml-100k", str(folder), str(tmp_path), download=False)
    for table in ("events", "users", "items"):
        pd.testing.assert_frame_equal(getattr(padded, table), getattr(original, table))


def test_missing_file_in_data_dir(tmp_path: Path) -> None:
    folder = _write_csv_release(tmp_path / "ml-20m")
    (folder / "movies.csv").unlink()
    with pytest.raises(DataError, match=r"missing file\(s\) .*movies\.csv"):
        load_movielens("ml-20m", str(folder), str(tmp_path), download=True)


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown MovieLens source 'ml-10m'"):
        load_movielens("ml-10m", None, str(tmp_path), download=False)


# --- download and cache --------------------------------------------------------------------------


def _zip_release(tmp_path: Path, source: str) -> tuple[Path, str]:
    """A zip laid out like the official archive (<source>/ratings.csv ...) and its SHA-256."""
    folder = _write_csv_release(tmp_path / "build" / source)
    archive = tmp_path / "serve" / f"{source}.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in sorted(folder.iterdir()):
            bundle.write(file, f"{source}/{file.name}")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


@pytest.fixture()
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over tmp_path/serve; yields (base URL, served folder)."""
    served = tmp_path / "serve"
    served.mkdir(exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_download_verifies_and_caches(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    url, served = http_server
    shutil.rmtree(served)
    archive, digest = _zip_release(tmp_path, "ml-latest-small")
    cache = tmp_path / "cache"
    checksums = {"ml-latest-small": Checksum("sha256", digest)}
    data = load_movielens("ml-latest-small", None, str(cache), download=True, base_url=url, checksums=checksums)
    assert len(data.events) == 5
    assert (cache / "ml-latest-small.zip").read_bytes() == archive.read_bytes()
    assert (cache / "ml-latest-small" / "ratings.csv").is_file()
    archive.unlink()  # the second load must come from the cache, not the server
    again = load_movielens("ml-latest-small", None, str(cache), download=True, base_url=url, checksums=checksums)
    pd.testing.assert_frame_equal(again.events, data.events)


def test_checksum_mismatch_deletes_the_download(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    url, served = http_server
    shutil.rmtree(served)
    _, digest = _zip_release(tmp_path, "ml-20m")
    cache = tmp_path / "cache"
    wrong = {"ml-20m": Checksum("sha256", "0" * 64)}
    with pytest.raises(DataError, match=f"has sha256 {digest}, expected 0000") as error:
        load_movielens("ml-20m", None, str(cache), download=True, base_url=url, checksums=wrong)
    assert "deleted" in str(error.value)
    assert list(cache.iterdir()) == []


def test_file_url_download(tmp_path: Path) -> None:
    archive, digest = _zip_release(tmp_path, "ml-32m")
    data = load_movielens("ml-32m", None, str(tmp_path / "cache"), download=True,
                          base_url=archive.parent.as_uri(), checksums={"ml-32m": Checksum("sha256", digest)})
    assert len(data.events) == 5


def test_offline_error_says_which_files_go_where(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        load_movielens("ml-1m", None, str(cache), download=True, base_url="http://127.0.0.1:9")
    message = str(error.value)
    assert "could not download http://127.0.0.1:9/ml-1m.zip" in message
    assert str(cache / "ml-1m") in message and "ratings.dat, movies.dat, users.dat" in message
    assert not list(cache.glob("*.part"))


def test_download_disabled_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"ratings\.csv, movies\.csv are not in .*ml-25m and data\.download is off"):
        load_movielens("ml-25m", None, str(tmp_path), download=False)
