"""`genloom db upgrade|current` against a new SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from typer.testing import CliRunner

from genloom.cli.main import app
from tests.services import POSTGRES, postgres_database

runner = CliRunner()


def test_upgrade_creates_the_schema_once_and_reports_it(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    assert runner.invoke(app, ["db", "current", "--database-url", url]).output.strip() == "empty (no schema yet)"
    first = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert first.exit_code == 0 and "from empty to revision 0013" in first.output
    again = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert again.exit_code == 0 and "current (revision 0013)" in again.output


def test_upgrade_on_postgresql_from_the_environment():
    with postgres_database("template0") as url:  # an empty database
        first = runner.invoke(app, ["db", "upgrade"], env={"GENLOOM_DATABASE_URL": url})
        assert first.exit_code == 0 and "from empty to revision 0013" in first.output
        assert runner.invoke(app, ["db", "current"], env={"GENLOOM_DATABASE_URL": url}).output.strip() == "0013"


def test_unreachable_database_is_a_clear_error_and_exit_1():
    url = POSTGRES.replace("postgresql://", "postgresql+asyncpg://").rsplit("@", 1)[0] + "@127.0.0.1:1/none"
    result = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert result.exit_code == 1 and "cannot migrate the database" in result.output and "Traceback" not in result.output


def test_a_plain_postgresql_url_as_hosts_hand_it_out_is_accepted():
    with postgres_database("template0") as url:
        plain = url.replace("postgresql+asyncpg://", "postgresql://")
        result = runner.invoke(app, ["db", "upgrade"], env={"GENLOOM_DATABASE_URL": plain})
        assert result.exit_code == 0 and "to revision 0013" in result.output, result.output
