from __future__ import annotations

import contextvars
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

BUILTIN_MODELS_DIR = Path(__file__).resolve().parent.parent / "builtin" / "models"
_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("genloom_yaml_file", default=None)


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    drain_timeout_s: float = Field(30.0, ge=0, description="SIGTERM: how long in-flight requests may finish")
    log_level: str = "info"


class ApiSettings(_Section):
    max_body_bytes: int = Field(1_048_576, gt=0, description="larger request bodies get 413")
    default_max_tokens: int = Field(256, gt=0, description="used when a request gives no max_tokens")
    max_n: int = Field(8, gt=0, description="most choices one request may ask for")


class QueueSettings(_Section):
    max_queued: int = Field(256, gt=0, description="requests waiting beyond this get 503 with Retry-After")
    retry_after_s: int = Field(1, ge=0)


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class DType(str, Enum):
    """auto: float32 on CPU, the checkpoint's half precision on CUDA."""

    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class RuntimeSettings(_Section):
    device: Device = Device.AUTO
    dtype: DType = DType.AUTO
    max_batch_size: int = Field(32, gt=0, description="sequences decoded together in one forward pass")
    torch_threads: int = Field(0, ge=0, description="0 leaves torch's default")


class ModelKind(str, Enum):
    TEXT = "text"


class ModelSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
    path: Path
    kind: ModelKind = ModelKind.TEXT
    max_batch_size: int | None = Field(None, gt=0)

    @field_validator("path")
    @classmethod
    def _path_is_a_directory(cls, path: Path) -> Path:
        path = path.expanduser()
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a model directory (no config.json there)")
        return path


class StoreSettings(_Section):
    echo_sql: bool = False


class Settings(BaseSettings):
    """The whole configuration. Environment variables are GENLOOM_<SECTION>__<KEY>, e.g.
    GENLOOM_SERVER__PORT=9000; top-level keys are GENLOOM_<KEY>, e.g. GENLOOM_DATA_DIR."""

    model_config = SettingsConfigDict(env_prefix="GENLOOM_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path("~/.genloom"), description="SQLite database and blobs live here")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under data_dir")
    builtin_models: bool = Field(True, description="serve the models that ship with Genloom")
    models: list[ModelSettings] = Field(default_factory=list)
    server: ServerSettings = Field(default_factory=ServerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    def served_models(self) -> list[ModelSettings]:
        """Built-in models first, then configured ones; a configured name replaces a built-in."""
        configured = {m.name for m in self.models}
        builtins = []
        if self.builtin_models and BUILTIN_MODELS_DIR.is_dir():
            for path in sorted(BUILTIN_MODELS_DIR.iterdir()):
                if (path / "config.json").is_file() and path.name not in configured:
                    builtins.append(ModelSettings(name=path.name, path=path))
        return builtins + list(self.models)

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir() / 'genloom.db'}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings tree: overrides (CLI flags) > environment > config file > defaults.

    Without config_file, ./genloom.yaml is read when it exists."""
    if config_file is None and Path("genloom.yaml").is_file():
        config_file = Path("genloom.yaml")
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    token = _yaml_file.set(config_file)
    try:
        return Settings(**_nest(overrides))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        where = f" (from {config_file}, GENLOOM_* environment or flags)" if config_file else ""
        raise ConfigError(f"invalid configuration{where}: {problems}") from e
    finally:
        _yaml_file.reset(token)


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """{'server.port': 1} -> {'server': {'port': 1}}; None values mean 'not given'."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
