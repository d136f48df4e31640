"""Shared fixtures: tiny real models built on the fly, free ports, running servers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from genloom.builtin.text_model import TextModelConfig, save_random_model

TINY = TextModelConfig(
    vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, seed=7
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a real BPE tokenizer and chat template (about 0.1M parameters)."""
    return save_random_model(tmp_path_factory.mktemp("models") / "tiny-llama", TINY, max_context=1024, init_std=0.3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_image_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Stable Diffusion pipeline (UNet, VAE, 2-layer BERT text encoder, MiniLM's
    tokenizer) that makes 32x32 pictures: about 1.6M parameters, loads in a second."""
    from genloom.builtin.image_model import save_random_pipeline

    return save_random_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd", seed=3, image_size=32)


@pytest.fixture(scope="session")
def postgres_template():
    from tests.services import postgres_template

    with postgres_template() as name:
        yield name


@pytest.fixture()
def postgres_url(postgres_template):
    """A fresh, migrated PostgreSQL database on the real server: its SQLAlchemy URL."""
    from tests.services import postgres_database

    with postgres_database(postgres_template) as url:
        yield url


@pytest.fixture()
def redis_prefix():
    """A Redis key prefix of this test's own on the real server (deleted after)."""
    from tests.services import redis_prefix

    with redis_prefix() as prefix:
        yield prefix


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The default run's per-test limit (pyproject's `timeout`) catches hangs; the long tests run
    with `-m slow` (a soak, 50 SIGKILLs, a long fuzz) get an hour."""
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(3600))
