"""`genloom images generate` against a real server on 127.0.0.1, driven through the Typer app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from genloom.cli.main import app
from genloom.runtimes.image import read_provenance
from tests.api.conftest import running_server
from tests.conftest import free_port

runner = CliRunner()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_image_model_dir: Path) -> Iterator[str]:
    models = [{"name": "tiny-sd", "path": str(tiny_image_model_dir), "kind": "image", "default_steps": 2}]
    with running_server(tmp_path_factory.mktemp("server"), tiny_model_dir, models=models) as (base, _):
        yield base


def test_generate_writes_pngs_that_carry_their_provenance(base_url: str, tmp_path: Path) -> None:
    out = tmp_path / "pics" / "circle.png"
    result = runner.invoke(app, ["images", "generate", "a blue circle", "-o", str(out), "--model", "tiny-sd", "--seed", "9", "--url", base_url])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "seed 9" in result.output
    meta = read_provenance(out.read_bytes())
    assert meta["prompt"] == "a blue circle" and meta["seed"] == 9 and meta["steps"] == 2
    with Image.open(out) as image:
        assert image.size == (32, 32)


def test_several_pictures_get_numbered_files(base_url: str, tmp_path: Path) -> None:
    out = tmp_path / "star.png"
    result = runner.invoke(app, ["images", "generate", "a star", "-o", str(out), "-n", "2", "--model", "tiny-sd", "--url", base_url])
    assert result.exit_code == 0, result.output
    seeds = [read_provenance((tmp_path / f"star-{i}.png").read_bytes())["seed"] for i in (1, 2)]
    assert seeds[1] == seeds[0] + 1
    assert not out.exists()


def test_a_refusal_is_one_line_and_a_failing_exit_code(base_url: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["images", "generate", "x", "-o", str(tmp_path / "x.png"), "--model", "tiny-sd", "--size", "33x33", "--url", base_url])
    assert result.exit_code == 1
    assert "size" in result.output and "Traceback" not in result.output
    unreachable = runner.invoke(app, ["images", "generate", "x", "--url", f"http://127.0.0.1:{free_port()}"])
    assert unreachable.exit_code == 1 and "Traceback" not in unreachable.output
