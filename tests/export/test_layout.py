"""trainer.export.layout: version numbering, atomic publishing, metadata, warmup records, signature models."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from recsys_common import contract
from serving.session_model import SessionModel
from trainer.export import layout


def _write_marker(text: str):
    def write(folder):
        (folder / "marker.txt").write_text(text)

    return write


@pytest.mark.parametrize(
    "children, expected",
    [([], 1), (["1"], 2), (["1", "3", "abc", "0"], 4), (["2", ".tmp-7-ab12cd34"], 8), (["10", "9"], 11)],
)
def test_next_version(tmp_path, children, expected):
    for name in children:
        (tmp_path / name).mkdir()
    assert layout.next_version(tmp_path) == expected


def test_next_version_of_a_missing_base_is_1(tmp_path):
    assert layout.next_version(tmp_path / "absent") == 1


def test_versions_grow_and_an_existing_version_is_never_overwritten(tmp_path):
    base = tmp_path / "ranking"
    first = layout.publish_version(base, _write_marker("first"))
    second = layout.publish_version(base, _write_marker("second"))
    assert (first.name, second.name) == ("1", "2")
    assert (first / "marker.txt").read_text() == "first"
    assert (second / "marker.txt").read_text() == "second"
    (base / "7").mkdir()
    assert layout.publish_version(base, _write_marker("third")).name == "8"
    assert layout.list_versions(base) == [1, 2, 7, 8]


def test_a_failing_write_leaves_no_version_and_no_temporary_folder(tmp_path):
    base = tmp_path / "retrieval"
    layout.publish_version(base, _write_marker("kept"))

    def failing(folder):
        (folder / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        layout.publish_version(base, failing)
    assert sorted(child.name for child in base.iterdir()) == ["1"]
    assert (base / "1" / "marker.txt").read_text() == "kept"


def test_the_version_appears_only_when_complete(tmp_path):
    base = tmp_path / "m"
    seen_during_write = []

    def write(folder):
        (folder / "a").write_text("a")
        seen_during_write.append(layout.list_versions(base))
        assert folder.parent == base and not folder.name.isdigit()

    layout.publish_version(base, write)
    assert seen_during_write == [[]]
    assert layout.list_versions(base) == [1]


def test_an_empty_export_is_refused(tmp_path):
    with pytest.raises(layout.ExportError, match="wrote nothing"):
        layout.publish_version(tmp_path / "m", lambda folder: None)
    assert list((tmp_path / "m").iterdir()) == []


def test_concurrent_exports_get_distinct_versions(tmp_path):
    base = tmp_path / "m"
    published = []

    def export(index):
        published.append(layout.publish_version(base, _write_marker(str(index))))

    threads = [threading.Thread(target=export, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(path.name) for path in published) == list(range(1, 7))
    markers = sorted(int((path / "marker.txt").read_text()) for path in published)
    assert markers == list(range(6))


def test_metadata_round_trip_converts_numpy_values(tmp_path):
    metadata = {
        "metrics": {"recall@10": np.float32(0.25), "n": np.int64(7)},
        "embedding_norms": np.array([1.5, 2.0]),
        "source": tmp_path / "data",
        **layout.signature_metadata(contract.RANKING_INPUTS, contract.RANKING_OUTPUTS),
    }
    layout.write_metadata(tmp_path, metadata)
    loaded = layout.read_metadata(tmp_path)
    assert loaded["metrics"] == {"recall@10": 0.25, "n": 7}
    assert loaded["embedding_norms"] == [1.5, 2.0]
    assert loaded["source"] == str(tmp_path / "data")
    raw = json.loads((tmp_path / "assets" / contract.METADATA_ASSET).read_text())
    assert raw == loaded


def test_signature_metadata_lists_every_input_with_its_default():
    block = layout.signature_metadata(contract.RANKING_INPUTS, contract.RANKING_OUTPUTS)
    assert list(block[contract.METADATA_INPUTS]) == [spec.name for spec in contract.RANKING_INPUTS]
    assert block[contract.METADATA_INPUTS]["age"] == {"dtype": "int64", "rank": 1, "default": 0}
    assert block[contract.METADATA_INPUTS]["watch_history"] == {"dtype": "string", "rank": 2, "default": ""}
    assert block[contract.METADATA_INPUTS]["candidate_ids"]["rank"] == 2
    assert list(block[contract.METADATA_OUTPUTS]) == ["scores", "expected_watch_time"]
    assert block["signature_name"] == contract.SIGNATURE_NAME


@pytest.mark.parametrize(
    "content, message",
    [(None, "does not exist"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object")],
)
def test_bad_metadata_is_reported(tmp_path, content, message):
    if content is not None:
        (tmp_path / "assets").mkdir()
        (tmp_path / "assets" / contract.METADATA_ASSET).write_text(content)
    with pytest.raises(layout.ExportError, match=message):
        layout.read_metadata(tmp_path)


@pytest.mark.parametrize(
    "metadata, message",
    [({"model": object()}, "object"), ({"metrics": {"recall": [0.5, float("nan")]}}, r"\['metrics'\]\['recall'\]\[1\]"),
     ({"loss": np.float32("inf")}, r"\['loss'\] is not a finite number")],
)
def test_unserialisable_metadata_is_reported(tmp_path, metadata, message):
    with pytest.raises(layout.ExportError, match=message):
        layout.write_metadata(tmp_path, metadata)
    assert not (tmp_path / "assets" / contract.METADATA_ASSET).exists()


def test_warmup_requests_round_trip(tmp_path):
    requests = [
        {"user_id": np.array(["u1", "u2"]), "watch_history": np.array([["", "i1"], ["i2", "i3"]]),
         "age": np.array([31, 0], np.int64)},
        {"user_id": np.array(["u3"]), "watch_history": np.array([[""]]), "age": np.array([7], np.int64)},
    ]
    layout.write_warmup_requests(tmp_path, contract.RETRIEVAL, requests)
    raw = [prediction_log_pb2.PredictionLog.FromString(record.numpy())
           for record in tf.data.TFRecordDataset(str(tmp_path / "assets.extra" / contract.WARMUP_FILE))]
    assert len(raw) == 2
    for log, expected in zip(raw, requests):
        request = log.predict_log.request
        assert (request.model_spec.name, request.model_spec.signature_name) == (contract.RETRIEVAL,
                                                                                contract.SIGNATURE_NAME)
        assert set(request.inputs) == set(expected)
        for name, array in expected.items():
            decoded = tf.make_ndarray(request.inputs[name])
            want = np.char.encode(array, "utf-8") if array.dtype.kind == "U" else array
            np.testing.assert_array_equal(decoded, want)
            assert decoded.dtype == want.dtype or array.dtype.kind == "U"
    assert [log.predict_log.request for log in layout.read_warmup_requests(tmp_path)] == \
        [log.predict_log.request for log in raw]


def test_warmup_needs_requests(tmp_path):
    with pytest.raises(layout.ExportError, match="no warmup requests"):
        layout.write_warmup_requests(tmp_path, contract.RANKING, [])


class _Doubler(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable(2.0)

    @tf.function(input_signature=[layout.tf_input_signature(contract.RANKING_INPUTS)])
    def serve(self, features):
        lengths = tf.cast(tf.strings.length(features[contract.CANDIDATE_IDS]), tf.float32)
        age = tf.cast(features[contract.AGE], tf.float32)[:, None]
        scores = self.scale * lengths + age
        return {contract.SCORES: scores, contract.EXPECTED_WATCH_TIME: tf.exp(-scores)}


def test_save_signature_model_serves_the_function_under_serving_default(tmp_path):
    module = _Doubler()

    def write(folder):
        layout.save_signature_model(module, module.serve, folder)
        layout.write_metadata(folder, layout.signature_metadata(contract.RANKING_INPUTS, contract.RANKING_OUTPUTS))

    version = layout.publish_version(tmp_path / contract.RANKING, write)
    loaded = tf.saved_model.load(str(version))
    assert list(loaded.signatures) == [contract.SIGNATURE_NAME]
    signature = loaded.signatures[contract.SIGNATURE_NAME]
    assert set(signature.structured_input_signature[1]) == {spec.name for spec in contract.RANKING_INPUTS}
    features = {spec.name: tf.constant([[""]] if spec.rank == 2 else [""]) if spec.dtype == "string"
                else tf.constant([5], tf.int64) for spec in contract.RANKING_INPUTS}
    features[contract.CANDIDATE_IDS] = tf.constant([["ab", "abcd", ""]])
    outputs = signature(**features)
    np.testing.assert_allclose(outputs[contract.SCORES].numpy(), [[2 * 2 + 5, 2 * 4 + 5, 5]])
    assert layout.read_metadata(version)[contract.METADATA_INPUTS]["age"]["default"] == 0


AGE_SPEC, HISTORY_SPEC = contract.TensorSpec("age", "int64", 1, 7), contract.TensorSpec("history", "string", 2, "x")
COUNT_SPEC = contract.TensorSpec("count", "int64", 2, 3)


def _sum_of_inputs(inputs):
    """[B]: age + count summed over its row + the number of "x" in the history row, each broadcast to the batch."""
    batch = tf.shape(inputs["age"])[0]
    count = tf.reduce_sum(tf.broadcast_to(inputs["count"], [batch, tf.shape(inputs["count"])[1]]), axis=1)
    xs = tf.reduce_sum(tf.cast(tf.equal(inputs["history"], "x"), tf.int64), axis=1)
    return {"total": inputs["age"] + count + tf.broadcast_to(xs, [batch])}


@pytest.mark.parametrize(("sent", "expected"), [
    ({"age": [1, 2]}, [1 + 3 + 1, 2 + 3 + 1]),  # both optional inputs from the SignatureDef's one-row defaults
    ({"age": [1, 2], "count": [[1, 1], [0, 5]]}, [1 + 2 + 1, 2 + 5 + 1]),
    ({"age": [1, 2], "count": [[4], [0]], "history": [["x", "x"], ["y", ""]]}, [1 + 4 + 2, 2 + 0 + 0]),
])
def test_signature_function_gives_optional_inputs_signature_defaults(tmp_path, sent, expected):
    module = tf.Module()
    module.serve = layout.signature_function(_sum_of_inputs, (AGE_SPEC, HISTORY_SPEC, COUNT_SPEC),
                                             optional=("history", "count"))
    layout.save_signature_model(module, module.serve, tmp_path / "model")
    with SessionModel.load(tmp_path / "model") as served:  # fed by name as TF Serving feeds it
        signature = served.signature_def()
        assert {name: tf.make_ndarray(proto).tolist() for name, proto in signature.defaults.items()} == {
            "history": [[b"x"]], "count": [[3]]}
        inputs = {name: np.array(value, dtype=object if name == "history" else np.int64)
                  for name, value in sent.items()}
        np.testing.assert_array_equal(served.run(contract.SIGNATURE_NAME, inputs)["total"], expected)


def test_one_loaded_model_feeds_its_signature_defaults_to_every_request_that_leaves_them_out(tmp_path):
    module = tf.Module()
    module.serve = layout.signature_function(_sum_of_inputs, (AGE_SPEC, HISTORY_SPEC, COUNT_SPEC),
                                             optional=("history", "count"))
    layout.save_signature_model(module, module.serve, tmp_path / "model")
    with SessionModel.load(tmp_path / "model") as served:  # the signature is read once, then reused
        for sent, expected in [({"age": [1, 2]}, [5, 6]), ({"age": [1], "count": [[7]]}, [9]), ({"age": [4]}, [8])] * 2:
            inputs = {name: np.array(value, dtype=np.int64) for name, value in sent.items()}
            np.testing.assert_array_equal(served.run(contract.SIGNATURE_NAME, inputs)["total"], expected)


def test_signature_function_refuses_an_optional_name_it_does_not_take():
    with pytest.raises(ValueError, match=r"optional input\(s\) \['language'\] are not signature inputs"):
        layout.signature_function(_sum_of_inputs, (AGE_SPEC, HISTORY_SPEC), optional=("language",))


MODELS = ("retrieval", "retrieval_bruteforce", "ranking")


def _publish_set(base, models=MODELS, text="x"):
    with layout.VersionSet(base, models) as versions:
        for name in models:
            versions.stage(base / name, _write_marker(f"{text}-{name}"))
        return versions.publish()


def _tree(base):
    return {child.name: sorted(grand.name for grand in child.iterdir()) for child in base.iterdir() if child.is_dir()}


def test_a_version_set_publishes_every_model_under_one_number_above_all_existing(tmp_path):
    (tmp_path / "ranking" / "4").mkdir(parents=True)
    (tmp_path / "retrieval" / "1").mkdir(parents=True)
    published = _publish_set(tmp_path)
    assert {name: path.name for name, path in published.items()} == {name: "5" for name in MODELS}
    assert (tmp_path / "retrieval_bruteforce" / "5" / "marker.txt").read_text() == "x-retrieval_bruteforce"
    assert _tree(tmp_path) == {"ranking": ["4", "5"], "retrieval": ["1", "5"], "retrieval_bruteforce": ["5"]}
    assert not list(tmp_path.glob(f"{layout.JOURNAL_PREFIX}*"))


def test_nothing_is_visible_until_publish_and_a_failure_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="ranking failed"):
        with layout.VersionSet(tmp_path, MODELS) as versions:
            target = versions.stage(tmp_path / "retrieval", _write_marker("r"))
            assert target == tmp_path / "retrieval" / "1" and not target.exists()
            assert all(not layout.list_versions(tmp_path / name) for name in MODELS)
            raise RuntimeError("ranking failed")
    assert _tree(tmp_path) == {"retrieval": []}


@pytest.mark.parametrize("stage_models, message", [
    (("retrieval", "ranking"), r"\['retrieval_bruteforce'\] of the version set were not written"),
    (("retrieval", "retrieval"), "not an unstaged model"),
    (("retrieval", "other"), "not an unstaged model"),
])
def test_a_set_is_published_only_whole(tmp_path, stage_models, message):
    with pytest.raises(layout.ExportError, match=message):
        with layout.VersionSet(tmp_path, MODELS) as versions:
            for name in stage_models:
                versions.stage(tmp_path / name, _write_marker(name))
            versions.publish()
    assert all(not layout.list_versions(tmp_path / name) for name in MODELS)
    assert not [path for path in tmp_path.rglob(f"{layout.TEMP_PREFIX}*")]


def _killed_during_publish(base, renamed):
    """The state a kill leaves after renaming `renamed` of MODELS: journal written, the others still staged."""
    _publish_set(base, text="old")
    versions = layout.VersionSet(base, MODELS).__enter__()
    for name in MODELS:
        versions.stage(base / name, _write_marker(f"new-{name}"))
    journal = {"version": 2, "models": {name: temp.name for name, temp in versions._staged.items()}}
    (base / f"{layout.JOURNAL_PREFIX}2.json").write_text(json.dumps(journal))
    for name in renamed:
        versions._staged.pop(name).rename(base / name / "2")
    versions._staged.clear()
    versions._lock.close()
    return journal


@pytest.mark.parametrize("renamed", [(), ("retrieval",), ("retrieval", "retrieval_bruteforce"), MODELS])
def test_a_publication_killed_half_way_is_completed_on_the_next_export(tmp_path, renamed):
    _killed_during_publish(tmp_path, renamed)
    (tmp_path / "ranking" / ".tmp-3-deadbeef").mkdir()  # a write killed before its publication
    (tmp_path / ".models.config.tmp-123").write_text("half")
    published = _publish_set(tmp_path, text="newest")
    assert {path.name for path in published.values()} == {"3"}
    assert _tree(tmp_path) == {name: ["1", "2", "3"] for name in MODELS}
    assert all((tmp_path / name / "2" / "marker.txt").read_text() == f"new-{name}" for name in MODELS)
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == [layout.LOCK_FILE]


def test_a_publication_whose_staged_folder_is_gone_is_rolled_back(tmp_path):
    journal = _killed_during_publish(tmp_path, ("retrieval",))
    shutil.rmtree(tmp_path / "ranking" / journal["models"]["ranking"])
    assert layout.repair_exports(tmp_path, MODELS)
    assert _tree(tmp_path) == {name: ["1"] for name in MODELS}
    assert not list(tmp_path.glob(f"{layout.JOURNAL_PREFIX}*"))


def test_a_second_exporter_waits_for_the_first(tmp_path):
    order = []
    with layout.VersionSet(tmp_path, MODELS) as first:
        thread = threading.Thread(target=lambda: order.append(_publish_set(tmp_path, text="second")))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and not order  # blocked on the lock
        for name in MODELS:
            first.stage(tmp_path / name, _write_marker(name))
        first.publish()
        order.append("first")
    thread.join(10)
    assert order[0] == "first" and {path.name for path in order[1].values()} == {"2"}


def test_the_metadata_lists_every_op_the_saved_graph_needs(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    from bench.synthetic_models import export_synthetic_models, make_catalog

    published = export_synthetic_models(tmp_path, make_catalog(40, dim=4), models=contract.MODEL_NAMES, k=5)
    for name, version_dir in published.items():
        metadata = layout.read_metadata(version_dir)
        saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
        stripped = sorted(op.name for op in saved.meta_graphs[0].meta_info_def.stripped_op_list.op)  # TF's own list
        assert metadata[layout.REQUIRED_OPS] == stripped, name
        assert metadata[layout.CUSTOM_OPS] == [op for op in stripped if op.startswith("Scann>")], name
    assert {"Scann>ScannSearchBatched", "Scann>TensorsToScann"} <= set(
        layout.read_metadata(published[contract.RETRIEVAL])[layout.CUSTOM_OPS])
    assert "MatMul" in layout.read_metadata(published[contract.RETRIEVAL_BRUTEFORCE])[layout.REQUIRED_OPS]


def test_ops_of_a_folder_without_a_saved_model_name_it(tmp_path):
    with pytest.raises(layout.ExportError, match="saved_model.pb cannot be read"):
        layout.saved_model_ops(tmp_path)


def test_repair_touches_only_the_output_folder_and_model_folders(tmp_path):
    (tmp_path / "ranking" / ".tmp-4-0badc0de").mkdir(parents=True)
    (tmp_path / "old_model" / "3").mkdir(parents=True)
    (tmp_path / "old_model" / ".tmp-4-0badc0de").mkdir()
    (tmp_path / "notes" / ".tmp-draft").mkdir(parents=True)  # not a model: left alone
    done = layout.repair_exports(tmp_path, MODELS)
    assert len(done) == 2 and all("removed the leftover" in line for line in done)
    assert (tmp_path / "notes" / ".tmp-draft").is_dir()
    assert not list(tmp_path.glob(f"*/{layout.TEMP_PREFIX}4-*"))
