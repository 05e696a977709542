"""Typed run configuration: YAML files into dataclasses, with CLI overrides.

Every field of every section is also a command-line flag (`--retrieval.epochs 3`), so
`python -m trainer.task --help` lists them all. An unknown key, a value of the wrong type
or an impossible value raises `ConfigError` naming the key, e.g.
`retrieval.epochs: expected int, got 'three' (str)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import types
import typing
from typing import Any, Literal, Union

import yaml

MOVIELENS_SOURCES = ("ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small")
LOGS_SOURCE = "logs"  # your own CSV logs in data.data_dir (trainer.data.logs)
SOURCES = ("synthetic", LOGS_SOURCE) + MOVIELENS_SOURCES
RETRIEVAL_FEATURES = (
    "user_id",
    "watch_history",
    "search_history",
    "demographics",
    "region",
    "example_age",
    "item_genres",
    "item_title",
    "item_age",
)
RANKING_MODELS = ("itempop", "mf", "gmf", "mlp", "neumf", "neumf_pretrained", "full")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the offending key."""


@dataclasses.dataclass
class SyntheticConfig:
    """Size and shape of the synthetic YouTube-like logs (source `synthetic`)."""

    num_users: int = 2000
    num_items: int = 1000
    num_topics: int = 20
    latent_dim: int = 16
    events_per_user: int = 40
    num_regions: int = 10
    search_probability: float = 0.3
    days: int = 120
    seed: int = 7
    temperature: float = 0.6
    popularity_skew: float = 0.6
    new_item_fraction: float = 0.3
    # The YouTube world (trainer.data.synthetic); each part is off at 0, configs/youtube.yaml turns them on.
    slate_size: int = 0  # items shown per watch (the watch and slate_size - 1 passed-over ones); 0: no impressions
    exploration_share: float = 0.2  # share of a slate's passed-over items the logging policy shows at random
    clickbait_fraction: float = 0.0  # items with high click appeal and short watches
    freshness_days: float = 0.0  # an item's popularity peaks this many days after upload, then decays; 0: off
    freshness_boost: float = 2.0  # the peak's logit offset
    num_channels: int = 0  # uploaders, each with a topic mix; users favour a few; 0: no channels
    num_languages: int = 0  # languages of users and items; a user rarely watches another language; 0: none

    def validate(self) -> None:
        _positive(self, "synthetic", "num_users", "num_items", "num_topics", "latent_dim", "events_per_user",
                  "num_regions", "days", "temperature")
        _probability(self, "synthetic", "search_probability", "new_item_fraction", "exploration_share",
                     "clickbait_fraction")
        for name in ("popularity_skew", "freshness_days", "freshness_boost", "slate_size", "num_channels",
                     "num_languages"):
            if getattr(self, name) < 0:
                raise ConfigError(f"synthetic.{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.slate_size > self.num_items // 2:
            raise ConfigError(f"synthetic.slate_size ({self.slate_size}) must be at most half of synthetic.num_items "
                              f"({self.num_items})")
        if self.slate_size == 1:
            raise ConfigError("synthetic.slate_size: 1 would show only the watched item (no passed-over impression); "
                              "use 0 for no impressions or >= 2")
        if self.events_per_user * 2 > self.num_items:
            raise ConfigError(
                f"synthetic.events_per_user ({self.events_per_user}) must be at most half of synthetic.num_items "
                f"({self.num_items}): a user never watches the same item twice"
            )


@dataclasses.dataclass
class DataConfig:
    """Where the events come from and how they are split."""

    source: str = "synthetic"
    data_dir: str | None = None
    cache_dir: str = "~/.cache/recommender"
    download: bool = True
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    eval_negatives: int = 99
    history_length: int = 20
    search_history_length: int = 10
    min_events_per_user: int = 2
    seed: int = 42
    prepared_dir: str | None = None  # a `python -m trainer.preprocess` folder: both stages train from its shards
    prepared_sample_examples: int = 200_000  # in-memory sample for ranking statistics (prepared_dir only)

    def validate(self) -> None:
        prepared = pathlib.Path(self.prepared_dir).expanduser() if self.prepared_dir is not None else None
        if prepared is not None and not (prepared / "manifest.json").is_file():
            raise ConfigError(f"data.prepared_dir: {self.prepared_dir!r} holds no manifest.json; run "
                              "`python -m trainer.preprocess --output-dir DIR` first")
        if self.source not in SOURCES:
            raise ConfigError(f"data.source: unknown source {self.source!r}; choose one of {', '.join(SOURCES)}")
        if self.source == LOGS_SOURCE and self.data_dir is None and prepared is None:
            raise ConfigError("data.source logs: set data.data_dir (--data-dir) to the folder of your CSV logs "
                              "(impressions.csv and/or events.csv, optional users.csv and items.csv)")
        _probability(self, "data", "validation_fraction", "test_fraction")
        if self.test_fraction == 0.0:
            raise ConfigError("data.test_fraction: 0 leaves the temporal test split empty, and the evaluation of both "
                              "stages needs it; set data.test_fraction > 0 (e.g. 0.1). The export is refit on all "
                              "the data anyway (export.refit)")
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                "data.validation_fraction + data.test_fraction must be < 1, got "
                f"{self.validation_fraction} + {self.test_fraction}"
            )
        _positive(self, "data", "eval_negatives", "history_length", "search_history_length", "min_events_per_user",
                  "prepared_sample_examples")


@dataclasses.dataclass
class RetrievalConfig:
    """The candidate generator (Covington et al. 2016) as a TFRS two-tower model."""

    features: list[str] = dataclasses.field(default_factory=lambda: list(RETRIEVAL_FEATURES))
    embedding_dim: int = 32
    tower_layers: list[int] = dataclasses.field(default_factory=lambda: [64, 32])
    share_item_embeddings: bool = True
    l2_normalize: bool = False
    temperature: float = 1.0
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    learning_rate: float = 0.005
    batch_size: int = 512
    epochs: int = 5
    early_stopping_patience: int = 2
    early_stopping_k: int = 100
    eval_ks: list[int] = dataclasses.field(default_factory=lambda: [10, 50, 100])
    eval_max_users: int = 2000

    def validate(self) -> None:
        unknown = sorted(set(self.features) - set(RETRIEVAL_FEATURES))
        if unknown:
            raise ConfigError(
                f"retrieval.features: unknown feature(s) {unknown}; choose from {', '.join(RETRIEVAL_FEATURES)}"
            )
        if not {"user_id", "watch_history", "search_history", "demographics", "region"} & set(self.features):
            raise ConfigError(
                "retrieval.features: the query tower needs at least one of user_id, watch_history, "
                f"search_history, demographics, region; got {self.features}"
            )
        _positive(self, "retrieval", "embedding_dim", "learning_rate", "batch_size", "epochs", "temperature",
                  "early_stopping_k", "eval_max_users")
        if self.early_stopping_patience < 0:
            raise ConfigError(f"retrieval.early_stopping_patience: must be >= 0, got {self.early_stopping_patience!r}")
        _all_positive(self, "retrieval", "tower_layers", "eval_ks")


@dataclasses.dataclass
class RankingConfig:
    """The ranking stage: the NCF family with the YouTube ranking features."""

    model: str = "full"
    compare: list[str] = dataclasses.field(default_factory=lambda: ["itempop", "mf", "gmf", "mlp", "neumf"])
    embedding_dim: int = 16
    mlp_layers: list[int] = dataclasses.field(default_factory=lambda: [64, 32, 16])
    num_negatives: int = 4
    # Of each row's negatives, how many come from the candidate generator's top `rerank_candidates` unseen
    # items for the user (trainer.ranking.rows); the rest are uniform.
    candidate_negatives: int = 0
    # F >= 2: the "full" model's retrieval_score feature of training rows comes from F generators, each
    # scoring the rows it did not train on (trainer.ranking.retrieval_feature); 0: in-sample. Needs in-memory data.
    retrieval_score_folds: int = 0
    # What the exported model trains on: "impressions" (shown items, clicked or not; Covington et al. 2016) when
    # the logs hold them and "auto" is set, else watches with sampled negatives. The NCF comparison uses watches.
    train_on: Literal["auto", "watches", "impressions"] = "auto"
    # Weight a watch by its watch time (the paper's weighted logistic regression); False: every row weighs 1.
    watch_time_weights: bool = True
    pretrain_alpha: float = 0.5
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    # bench.ncf_table (ml-100k) tries 0.002 and 0.005: 0.005 stops early after fewer epochs, a little below
    # 0.002's validation HR@10; the faster rate suits the 5-epoch default.
    learning_rate: float = 0.005
    batch_size: int = 256
    epochs: int = 5
    rerank_candidates: int = 100
    # NeuMF fine-tuning after pretraining (the paper switches to plain SGD; Adam at a lower rate also works).
    pretrained_optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    pretrained_learning_rate: float = 0.0002
    feature_embedding_dim: int = 8
    num_quantiles: int = 100
    l2_regularization: float = 0.0
    # Epochs without a better validation HR@10 before training stops (0 = never stop early).
    early_stopping_patience: int = 2
    eval_ks: list[int] = dataclasses.field(default_factory=lambda: [10, 50])
    # Held-out events (and full-ranking users) evaluated per split; a random subset above this.
    eval_max_examples: int = 5000
    resume: bool = True

    def validate(self) -> None:
        for key, names in (("model", [self.model]), ("compare", self.compare)):
            for name in names:
                if name not in RANKING_MODELS:
                    raise ConfigError(
                        f"ranking.{key}: unknown model {name!r}; choose one of {', '.join(RANKING_MODELS)}")
        _positive(self, "ranking", "embedding_dim", "num_negatives", "learning_rate", "batch_size", "epochs",
                  "rerank_candidates", "pretrained_learning_rate", "feature_embedding_dim", "num_quantiles",
                  "eval_max_examples")
        _all_positive(self, "ranking", "mlp_layers", "eval_ks")
        _probability(self, "ranking", "pretrain_alpha")
        if self.train_on not in ("auto", "watches", "impressions"):
            raise ConfigError(f"ranking.train_on: must be auto, watches or impressions, got {self.train_on!r}")
        if self.retrieval_score_folds < 0 or self.retrieval_score_folds == 1:
            raise ConfigError(f"ranking.retrieval_score_folds must be 0 (in-sample scores) or >= 2, "
                              f"got {self.retrieval_score_folds}")
        if not 0 <= self.candidate_negatives <= self.num_negatives:
            raise ConfigError(f"ranking.candidate_negatives must be in [0, ranking.num_negatives = "
                              f"{self.num_negatives}], got {self.candidate_negatives}")
        if self.l2_regularization < 0 or self.early_stopping_patience < 0:
            raise ConfigError("ranking.l2_regularization and ranking.early_stopping_patience must be >= 0, got "
                              f"{self.l2_regularization} and {self.early_stopping_patience}")


@dataclasses.dataclass
class ExportConfig:
    """What is written to the TF Serving layout of saved_models/."""

    output_dir: str = "saved_models"
    max_k: int = 100
    scann_target_recall: float = 0.95
    scann_brute_force_below: int = 20000
    keep_versions: int = 2
    num_shards: int = 1
    warmup_requests: int = 3
    refit: bool = True  # retrain both stages on the whole log (selected epochs) before exporting

    def validate(self) -> None:
        _positive(self, "export", "max_k", "keep_versions", "num_shards", "warmup_requests")
        _probability(self, "export", "scann_target_recall")


@dataclasses.dataclass
class Config:
    """A whole run: data, both models and the export."""

    run_dir: str = "runs"
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def validate(self) -> None:
        folds = self.ranking.retrieval_score_folds
        if folds and self.data.prepared_dir is not None:
            raise ConfigError(f"ranking.retrieval_score_folds ({folds}) needs the in-memory training rows, which "
                              "the streamed path (data.prepared_dir) does not hold; set ranking.retrieval_score_folds "
                              "to 0 or drop data.prepared_dir")
        for section in (self.data, self.synthetic, self.retrieval, self.ranking, self.export):
            section.validate()
        if self.data.source == "synthetic" and self.data.prepared_dir is None:
            self._check_synthetic_sizes()

    def _check_synthetic_sizes(self) -> None:
        """What every stage needs of the synthetic logs; the ranking evaluation needs the most.

        The NCF protocol ranks each held-out item among data.eval_negatives items the user never
        watched, drawn from the items of the training period; that period holds about
        num_users * events_per_user * (1 - validation_fraction - test_fraction) events, so both it
        and the catalogue must exceed eval_negatives + events_per_user (a user's own items).
        """
        if self.data.data_dir is not None:
            raise ConfigError(f"data.data_dir ({self.data.data_dir!r}, --data-dir): data.source synthetic generates "
                              "its logs and reads no folder; set data.source to a MovieLens release or drop it")
        needed = self.data.eval_negatives + self.synthetic.events_per_user + 1
        train_events = int(self.synthetic.num_users * self.synthetic.events_per_user
                           * (1.0 - self.data.validation_fraction - self.data.test_fraction))
        if self.synthetic.num_users < 2 or self.synthetic.num_items < needed or train_events < needed:
            raise ConfigError(
                f"synthetic.num_users ({self.synthetic.num_users}) and synthetic.num_items "
                f"({self.synthetic.num_items}) are too small: the ranking evaluation draws data.eval_negatives "
                f"({self.data.eval_negatives}) unwatched items per user, so it needs at least 2 users, at least "
                f"{needed} items (eval_negatives + events_per_user + 1) and as many training events (num_users * "
                f"events_per_user * training share = {train_events}); raise num_users / num_items or lower "
                "data.eval_negatives")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | pathlib.Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Reads a YAML config (or the defaults), applies `overrides` ({"a.b": value}) and validates.

    Raises:
        ConfigError: the file is missing or not a mapping, or a key, type or value is wrong.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = pathlib.Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"config file {path} is not a file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        except OSError as error:
            raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
        raw = loaded
    config = _build(Config, raw, prefix="")
    for dotted, value in (overrides or {}).items():
        _set_dotted(config, dotted, value)
    config.validate()
    return config


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one `--section.field` flag for every config field (values are parsed as YAML)."""
    group = parser.add_argument_group("config overrides (any field of the YAML config)")
    for dotted, field_type, default in _leaf_fields(Config, ""):
        group.add_argument(
            f"--{dotted}",
            dest=f"override:{dotted}",
            metavar=_type_name(field_type).upper(),
            default=argparse.SUPPRESS,
            help=f"default {default!r}",
        )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `--section.field` flags that were given, as {"section.field": parsed value}."""
    overrides = {}
    for key, text in vars(args).items():
        if key.startswith("override:"):
            overrides[key.removeprefix("override:")] = yaml.safe_load(text) if isinstance(text, str) else text
    return overrides


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f" in section {prefix.rstrip('.')!r}" if prefix else ""
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}{where}; "
                          f"known keys: {', '.join(sorted(names))}")
    instance = cls()
    for name, value in raw.items():
        key = prefix + name
        if _is_section(hints[name]):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of fields, got {value!r}")
            setattr(instance, name, _build(hints[name], value, key + "."))
        else:
            setattr(instance, name, _check_type(key, value, hints[name]))
    return instance


def _set_dotted(config: Config, dotted: str, value: Any) -> None:
    *path, leaf = dotted.split(".")
    target: Any = config
    for part in path:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise ConfigError(f"unknown config key {dotted!r}")
        target = getattr(target, part)
    if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
        raise ConfigError(f"unknown config key {dotted!r}")
    hint = typing.get_type_hints(type(target))[leaf]
    if _is_section(hint):
        raise ConfigError(f"{dotted} is a section; set one of its fields, e.g. --{dotted}.<field>")
    setattr(target, leaf, _check_type(dotted, value, hint))


def _is_section(hint: Any) -> bool:
    """True for a config section (a dataclass type), False for a leaf field's type."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _check_type(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(args[0])}, got {value!r}")
        return [_check_type(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    return value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _leaf_fields(cls: type, prefix: str) -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(cls)
    defaults = cls()
    leaves = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if _is_section(hint):
            leaves.extend(_leaf_fields(hint, prefix + field.name + "."))
        else:
            leaves.append((prefix + field.name, hint, getattr(defaults, field.name)))
    return leaves


def _positive(section: Any, name: str, *fields: str) -> None:
    for field in fields:
        value = getattr(section, field)
        if value <= 0:
            raise ConfigError(f"{name}.{field}: must be > 0, got {value!r}")


def _all_positive(section: Any, name: str, *fields: str) -> None:
    for field in fields:
        values = getattr(section, field)
        if not values or any(v <= 0 for v in values):
            raise ConfigError(f"{name}.{field}: must be a non-empty list of positive numbers, got {values!r}")


def _probability(section: Any, name: str, *fields: str) -> None:
    for field in fields:
        value = getattr(section, field)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}.{field}: must be in [0, 1], got {value!r}")
