"""Config loading: YAML into typed dataclasses, CLI overrides, errors that name the key."""

import argparse
import pathlib
import re

import pytest
import yaml

from trainer import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "tests" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_load_with_every_value_they_set(path):
    loaded = config_lib.load_config(path).to_dict()
    for key, value in (yaml.safe_load(path.read_text()) or {}).items():
        if isinstance(value, dict):
            assert {field: loaded[key][field] for field in value} == value, key
        else:
            assert loaded[key] == value, key


def test_defaults_equal_default_yaml():
    assert config_lib.load_config(ROOT / "configs" / "default.yaml") == config_lib.load_config()


def test_yaml_values_and_overrides_apply(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("retrieval:\n  epochs: 7\n  tower_layers: [128, 64]\nranking:\n  learning_rate: 1\n")
    config = config_lib.load_config(path, {"retrieval.epochs": 9})
    assert config.retrieval.epochs == 9
    assert config.retrieval.tower_layers == [128, 64]
    assert config.ranking.learning_rate == 1.0 and isinstance(config.ranking.learning_rate, float)


@pytest.mark.parametrize(
    "text, message",
    [
        ("retrieval:\n  epochz: 3\n", "retrieval.epochz"),
        ("bogus: 1\n", "bogus"),
        ("retrieval:\n  epochs: three\n", "retrieval.epochs: expected int, got 'three'"),
        ("retrieval:\n  epochs: true\n", "retrieval.epochs: expected int"),
        ("retrieval:\n  epochs: 0\n", "retrieval.epochs: must be > 0"),
        ("retrieval:\n  tower_layers: [64, -1]\n", "retrieval.tower_layers"),
        ("retrieval:\n  features: [user_id, telepathy]\n", "telepathy"),
        ("retrieval:\n  optimizer: rmsprop\n", "retrieval.optimizer: expected one of"),
        ("data:\n  source: ml-5m\n", "data.source: unknown source 'ml-5m'"),
        ("data:\n  test_fraction: 0.6\n  validation_fraction: 0.5\n", "must be < 1"),
        ("data:\n  test_fraction: 0\n", "data.test_fraction: 0 leaves the temporal test split empty"),
        ("ranking:\n  model: deepfm\n", "ranking.model: unknown model 'deepfm'"),
        ("export: 3\n", "export: expected a mapping"),
        ("- a\n- b\n", "must hold a mapping"),
        ("retrieval: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(config_lib.ConfigError, match=message.replace("[", r"\[")):
        config_lib.load_config(path)


@pytest.mark.parametrize("key", [leaf for leaf, hint, _ in config_lib._leaf_fields(config_lib.Config, "")
                                 if hint is float])
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_every_float_must_be_finite(tmp_path, key, text):
    section, field = key.split(".")
    path = tmp_path / "bad.yaml"
    path.write_text(f"{section}:\n  {field}: {text}\n")
    with pytest.raises(config_lib.ConfigError, match=rf"^{re.escape(key)}: expected a finite number, got -?(nan|inf)$"):
        config_lib.load_config(path)
    with pytest.raises(config_lib.ConfigError, match=re.escape(key)):  # the same from a --flag
        config_lib.load_config(None, {key: yaml.safe_load(text)})


@pytest.mark.parametrize("overrides, message", [
    ({"synthetic.num_users": 1}, r"synthetic.num_users \(1\).*too small.*at least 2 users"),
    ({"synthetic.num_users": 4}, r"num_users \* events_per_user \* training share = 64\)"),
    ({"synthetic.num_items": 70, "synthetic.events_per_user": 20}, r"at least 71 items"),
    ({"data.data_dir": "/data/ml-100k"}, r"data.data_dir \('/data/ml-100k', --data-dir\): data.source synthetic"),
])
def test_synthetic_sizes_and_a_data_dir_it_would_ignore_are_refused(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load_config(ROOT / "tests" / "configs" / "tiny.yaml", overrides)


def test_the_smallest_synthetic_sizes_that_the_checks_allow_load():
    config = config_lib.load_config(ROOT / "tests" / "configs" / "tiny.yaml", {"synthetic.num_users": 5})
    assert config.synthetic.num_users == 5
    assert config_lib.load_config(None, {"data.source": "ml-100k", "data.data_dir": "/d"}).data.data_dir == "/d"


FOLDER = object()  # the path is a folder, not a file


@pytest.mark.parametrize(("name", "content", "message"), [
    ("nope.yaml", None, "nope.yaml does not exist"), ("folder", FOLDER, "folder is not a file"),
    ("latin1.yaml", b"seed: 1 # caf\xe9\n", "latin1.yaml is not valid YAML"),
    ("list.yaml", b"- 1\n", "list.yaml must hold a mapping, got list")])
def test_a_config_file_that_cannot_be_used_is_named(tmp_path, name, content, message):
    path = tmp_path / name
    if content is FOLDER:
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load_config(path)


def test_every_field_is_a_flag_parsed_as_yaml():
    parser = argparse.ArgumentParser()
    config_lib.add_config_flags(parser)
    args = parser.parse_args(["--retrieval.tower_layers", "[8, 4]", "--data.source", "ml-100k",
                              "--export.scann_target_recall", "0.9"])
    overrides = config_lib.overrides_from_args(args)
    assert overrides == {"retrieval.tower_layers": [8, 4], "data.source": "ml-100k",
                         "export.scann_target_recall": 0.9}
    config = config_lib.load_config(None, overrides)
    assert config.retrieval.tower_layers == [8, 4]


@pytest.mark.parametrize("dotted", ["retrieval.nope", "nope.epochs", "retrieval"])
def test_unknown_override_is_an_error(dotted):
    with pytest.raises(config_lib.ConfigError, match=re.escape(dotted)):
        config_lib.load_config(None, {dotted: 1})


@pytest.mark.parametrize("argv, message", [
    (["--synthetic.num_users", "1"], "synthetic.num_users (1)"),
    (["--data-dir", "/data/ml-100k"], "data.data_dir ('/data/ml-100k', --data-dir)"),
    (["--retrieval.learning_rate", ".nan"], "retrieval.learning_rate: expected a finite number, got nan"),
])
def test_the_trainer_exits_2_naming_the_key(argv, message, capsys):
    from trainer import task

    assert task.main(argv) == 2
    assert message in capsys.readouterr().err
