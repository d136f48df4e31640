"""The registry on real databases: config sync is idempotent, and processes starting together on
one PostgreSQL database register each config entry once."""

from __future__ import annotations

import asyncio

from genloom.config import ModelSettings
from genloom.registry.registry import ModelRegistry
from genloom.store import Database
from genloom.store.model_registry import RegistryStore


def test_replicas_starting_together_register_each_config_model_once(postgres_url, tiny_model_dir):
    models = [ModelSettings(name="tiny", path=tiny_model_dir)]

    async def scenario() -> list[str]:
        databases = [Database(url=postgres_url) for _ in range(4)]
        registries = [ModelRegistry(store=RegistryStore(database=d)) for d in databases]
        try:
            await asyncio.gather(*(r.sync_config(models) for r in registries))
            versions = await registries[0].store.versions("tiny")
            aliases = await registries[0].store.aliases()
            assert aliases == {"tiny": {"production": 1}}
            return [v.key for v in versions]
        finally:
            for d in databases:
                await d.dispose()

    assert asyncio.run(scenario()) == ["tiny@v1"]


def test_a_changed_config_entry_is_a_new_version_and_production_follows(tmp_path, tiny_model_dir):
    async def scenario() -> None:
        database = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await database.migrate()
        registry = ModelRegistry(store=RegistryStore(database=database))
        try:
            await registry.sync_config([ModelSettings(name="tiny", path=tiny_model_dir)])
            await registry.sync_config([ModelSettings(name="tiny", path=tiny_model_dir)])  # unchanged: nothing
            assert [v.key for v in await registry.store.versions("tiny")] == ["tiny@v1"]
            await registry.sync_config([ModelSettings(name="tiny", path=tiny_model_dir, max_batch_size=4)])
            assert [v.key for v in await registry.store.versions("tiny")] == ["tiny@v1", "tiny@v2"]
            assert registry.catalog.version("tiny").key == "tiny@v2"
            await registry.sync_config([])  # removed from the config: retired, alias gone
            assert registry.catalog.versions == {} and await registry.store.aliases() == {}
        finally:
            await database.dispose()

    asyncio.run(scenario())


def test_a_start_reads_a_models_files_only_when_their_names_sizes_or_times_changed(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    from genloom.registry import registry as registry_module

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    reads: list[str] = []
    real = registry_module.revision_of
    monkeypatch.setattr(registry_module, "revision_of", lambda s: reads.append(s.name) or real(s))

    async def scenario() -> None:
        database = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await database.migrate()
        registry = ModelRegistry(store=RegistryStore(database=database))
        try:
            await registry.sync_config([ModelSettings(name="m", path=model)])
            await registry.sync_config([ModelSettings(name="m", path=model)])
            assert reads == ["m"]  # the second start compared names, sizes and times only
            config = model / "config.json"
            config.write_text(config.read_text())  # touched, same bytes: read, no new version
            await registry.sync_config([ModelSettings(name="m", path=model)])
            assert reads == ["m", "m"] and [v.key for v in await registry.store.versions("m")] == ["m@v1"]
            config.write_text(config.read_text().replace("{", "{\n", 1))  # other bytes: a new version
            await registry.sync_config([ModelSettings(name="m", path=model)])
            assert [v.key for v in await registry.store.versions("m")] == ["m@v1", "m@v2"]
        finally:
            await database.dispose()

    asyncio.run(scenario())
