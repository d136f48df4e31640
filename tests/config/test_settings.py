from pathlib import Path

import pytest

from genloom.config import ConfigError, load_settings


def test_defaults_serve_the_builtin_on_localhost(monkeypatch):
    monkeypatch.delenv("GENLOOM_SERVER__PORT", raising=False)
    settings = load_settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000


def test_environment_overrides_file_and_flags_override_environment(tmp_path, monkeypatch):
    config = tmp_path / "genloom.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 7000\nqueue:\n  max_queued: 5\n")
    monkeypatch.setenv("GENLOOM_SERVER__PORT", "7100")
    settings = load_settings(config)
    assert (settings.server.host, settings.server.port, settings.queue.max_queued) == ("0.0.0.0", 7100, 5)
    assert load_settings(config, **{"server.port": 7200}).server.port == 7200


def test_unknown_key_in_file_names_the_key(tmp_path):
    config = tmp_path / "genloom.yaml"
    config.write_text("server:\n  prot: 1\n")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings(config)


def test_invalid_environment_value_names_the_key(monkeypatch):
    monkeypatch.setenv("GENLOOM_QUEUE__MAX_QUEUED", "-3")
    with pytest.raises(ConfigError, match=r"queue\.max_queued"):
        load_settings()


def test_model_path_without_config_json_is_refused(tmp_path):
    config = tmp_path / "genloom.yaml"
    config.write_text(f"models:\n  - name: mine\n    path: {tmp_path}\n")
    with pytest.raises(ConfigError, match=r"models\.0\.path"):
        load_settings(config)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_configured_model_is_served_after_builtins(tiny_model_dir: Path, tmp_path):
    config = tmp_path / "genloom.yaml"
    config.write_text(f"builtin_models: false\nmodels:\n  - name: tiny\n    path: {tiny_model_dir}\n")
    served = load_settings(config).served_models()
    assert [m.name for m in served] == ["tiny"]


def test_readme_config_example_is_valid(tiny_model_dir, tiny_image_model_dir, tmp_path):
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)[0]
    config = tmp_path / "genloom.yaml"
    example = example.replace("/models/my-llama", str(tiny_model_dir))
    config.write_text(example.replace("/models/stable-diffusion-v1-5", str(tiny_image_model_dir)))
    settings = load_settings(config)
    assert [m.name for m in settings.models] == ["my-llama", "vendor-large", "my-sd"]
    assert settings.models[2].kind.value == "image" and settings.models[2].default_steps == 30
    assert settings.models[1].kind.value == "remote" and settings.models[1].fallbacks == ["my-llama"]
    assert settings.routing.aliases == {"default": "my-llama", "smart": "vendor-large"}


def test_webhook_allow_hosts_come_as_a_comma_list_or_a_yaml_list(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLOOM_WEBHOOK_ALLOW_HOSTS", " A.example , ,[::1],")
    assert load_settings().webhook_allow_hosts == ["a.example", "::1"]
    monkeypatch.delenv("GENLOOM_WEBHOOK_ALLOW_HOSTS")
    config = tmp_path / "genloom.yaml"
    config.write_text("webhook_allow_hosts: [Hooks.Internal, '[::1]']\n")
    assert load_settings(config).webhook_allow_hosts == ["hooks.internal", "::1"]


def test_an_image_model_must_be_a_diffusers_directory(tiny_model_dir, tiny_image_model_dir, tmp_path):
    config = tmp_path / "genloom.yaml"
    config.write_text(f"models:\n  - {{name: sd, kind: image, path: {tiny_model_dir}}}\n")
    with pytest.raises(ConfigError, match="not a diffusers pipeline"):
        load_settings(config)
    config.write_text(f"models:\n  - {{name: llm, path: {tiny_image_model_dir}}}\n")
    with pytest.raises(ConfigError, match="not a transformers model"):
        load_settings(config)
    config.write_text("images: {max_batch_images: 4, max_images_per_request: 8}\n")
    with pytest.raises(ConfigError, match="must not exceed max_batch_images"):
        load_settings(config)


def test_scale_out_settings_are_checked_together(monkeypatch):
    with pytest.raises(ConfigError, match="role api needs redis_url"):
        load_settings(**{"server.role": "api"})
    monkeypatch.setenv("GENLOOM_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert load_settings(**{"server.role": "api"}).server.role.value == "api"
    monkeypatch.setenv("GENLOOM_STORE__BLOBS", "s3")
    with pytest.raises(ConfigError, match="s3_bucket"):
        load_settings()
    monkeypatch.setenv("GENLOOM_STORE__S3_BUCKET", "genloom-files")
    assert load_settings().store.s3_bucket == "genloom-files"


def test_a_misspelt_environment_variable_is_refused_naming_the_nearest_key(monkeypatch):
    monkeypatch.setenv("GENLOOM_SERVR__PORT", "9000")
    with pytest.raises(ConfigError, match="GENLOOM_SERVR__PORT .* did you mean GENLOOM_SERVER__PORT"):
        load_settings()
    monkeypatch.delenv("GENLOOM_SERVR__PORT")
    monkeypatch.setenv("GENLOOM_LOG_LEVEL", "debug")
    with pytest.raises(ConfigError, match="did you mean GENLOOM_SERVER__LOG_LEVEL"):
        load_settings()


def test_variables_of_genloom_tools_that_are_not_settings_pass(monkeypatch):
    for name in ("GENLOOM_API_KEY", "GENLOOM_UPSTREAM_KEY", "GENLOOM_TEST_REDIS", "GENLOOM_BENCH_REDIS"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("GENLOOM_QUEUE__MAX_QUEUED", "40")
    assert load_settings().queue.max_queued == 40


@pytest.mark.parametrize("given", ["postgres://u:pw@db:5432/genloom", "postgresql://u:pw@db:5432/genloom"])
def test_the_postgresql_url_every_host_hands_out_uses_the_shipped_driver(monkeypatch, given):
    monkeypatch.setenv("GENLOOM_DATABASE_URL", given)
    assert load_settings().resolved_database_url() == "postgresql+asyncpg://u:pw@db:5432/genloom"


def test_a_database_genloom_cannot_drive_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("GENLOOM_DATABASE_URL", "mysql://u@db/genloom")
    with pytest.raises(ConfigError, match="database_url: .*scheme 'mysql' is not supported"):
        load_settings()
