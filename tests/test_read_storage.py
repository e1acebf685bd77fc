"""The commands that only read a study (worker, export, analyze) never create its storage: asking
for a study where there is none writes no SQLite file, no journal file and no Optuna tables."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.errors import StudyError
from nas_meta.search.runner import run_worker
from nas_meta.search.study import create_study, find_studies, load_study

POSTGRES = os.environ.get("NAS_META_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(
    not POSTGRES,
    reason="no PostgreSQL: none answers on 127.0.0.1:5432 and NAS_META_TEST_POSTGRES (a postgresql:// URL) is unset",
)


def _url(kind: str, path: Path) -> str:
    return f"sqlite:///{path}" if kind == "sqlite" else f"journal:///{path}"


def _command(command: str, url: str, tmp_path: Path) -> list[str]:
    argv = [command, "--study", "s", "--storage", url]
    if command == "worker":
        return [*argv, "--cache-dir", str(tmp_path / "cache")]
    return [*argv, "--results-dir", str(tmp_path / "results")]


@pytest.mark.parametrize("command", ["worker", "export", "analyze"])
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_read_command_on_a_new_storage_path_says_no_study_and_writes_nothing(tmp_path, capsys, command, kind):
    path = tmp_path / ("new.db" if kind == "sqlite" else "new.log")
    assert main(_command(command, _url(kind, path), tmp_path)) == 2
    assert list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    what = "database" if kind == "sqlite" else "journal file"
    assert err.count("\n") == 1 and f"error: no study 's': no {what} at '{path}'" in err


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_library_read_paths_write_nothing_either(tmp_path, kind):
    url = _url(kind, tmp_path / "new")
    for read in (
        lambda: load_study("s", url),
        lambda: run_worker("s", url),
        lambda: find_studies(["s"], url, tmp_path),
    ):
        with pytest.raises(StudyError, match="no study 's'"):
            read()
        assert list(tmp_path.iterdir()) == []


def test_an_empty_sqlite_file_is_not_given_optunas_tables(tmp_path, capsys):
    path = tmp_path / "empty.db"
    path.touch()
    assert main(_command("export", f"sqlite:///{path}", tmp_path)) == 2
    assert path.stat().st_size == 0
    assert "no study 's': 'sqlite:///" in capsys.readouterr().err


def test_search_still_creates_and_then_the_study_reads(tmp_path):
    url = f"sqlite:///{tmp_path / 'made.db'}"
    cfg = make_config("smoke", data={"dataset": "sinusoid"}, search={"space": "mlp", "storage": url})
    create_study(cfg, "s", "regression")
    assert load_study("s", url).study_name == "s"
    assert find_studies(["s"], url, tmp_path) == [("s", url)]
    with pytest.raises(StudyError, match=r"no study 'other' in .*studies there: \['s'\]"):
        load_study("other", url)


@pytest.mark.postgres
@needs_postgres
def test_an_empty_postgres_database_is_not_given_optunas_tables(tmp_path, capsys):
    import sqlalchemy

    assert POSTGRES is not None
    # A schema of its own stands for an empty database: the test database may hold other tests' tables.
    schema = f"nas_meta_empty_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f"create schema {schema}"))
    url = f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}options=-csearch_path%3D{schema}"
    try:
        for command in ("worker", "export", "analyze"):
            assert main(_command(command, url, tmp_path)) == 2
            assert sqlalchemy.inspect(admin).get_table_names(schema=schema) == []
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "no study 's': " in err and "holds no Optuna studies" in err
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f"drop schema {schema} cascade"))
        admin.dispose()
