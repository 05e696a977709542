"""Fixtures of the data-layer tests: the shared MovieLens copies and small synthetic datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from trainer.config import SyntheticConfig
from trainer.data.schema import Dataset
from trainer.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"
SMALL_SYNTHETIC = SyntheticConfig(num_users=300, num_items=200, num_topics=6, latent_dim=8, events_per_user=25,
                                  num_regions=4, days=60, seed=11)


def shared_folder(name: str) -> Path:
    """A folder of ../shared/data; skips the test when it is absent."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} is not available")
    return folder


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    return shared_folder("ml-100k")


@pytest.fixture(scope="session")
def ml1m_dir() -> Path:
    return shared_folder("ml-1m")


@pytest.fixture(scope="session")
def small_synthetic() -> Dataset:
    return generate(SMALL_SYNTHETIC)


@pytest.fixture()
def small_config() -> SyntheticConfig:
    """A fresh copy of the small synthetic config (tests may change it)."""
    return dataclasses.replace(SMALL_SYNTHETIC)


@pytest.fixture()
def tiny_config_path() -> Path:
    return TINY_CONFIG
