"""Shared test settings: tiny shapes, CPU, deterministic; a fresh PostgreSQL database for the
distributed-search tests when a server answers."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

# One process per search unless a test asks for more (the default is one per core): the suite's
# trials then come in a reproducible order, in this process and in the CLI processes it starts.
os.environ["NAS_META_N_WORKERS"] = "1"

# Where the distributed-search tests look for a server when NAS_META_TEST_POSTGRES is not set:
# the trust-auth server these machines run (a user's machine may have none: the tests then skip).
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432"
_created: list[str] = []


def _local_postgres_database() -> str | None:
    """A fresh database on the local server, or None when no server answers."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            f"{LOCAL_POSTGRES}/postgres", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with engine.connect() as conn:
            name = f"nas_meta_test_{uuid.uuid4().hex[:12]}"
            conn.execute(sqlalchemy.text(f"create database {name}"))
        engine.dispose()
    except Exception:  # no driver, no server, refused login: the tests skip and say why
        return None
    _created.append(name)
    return f"{LOCAL_POSTGRES}/{name}"


def pytest_configure(config):
    # Two cores on CI; more threads than cores only adds contention for tiny shapes.
    torch.set_num_threads(2)
    # Before the test modules read it: a plain `pytest` runs the PostgreSQL tests too when a
    # server answers, not only .ci/run (which sets the URL itself).
    if not os.environ.get("NAS_META_TEST_POSTGRES") and not os.environ.get("NAS_META_NO_LOCAL_POSTGRES"):
        url = _local_postgres_database()
        if url is not None:
            os.environ["NAS_META_TEST_POSTGRES"] = url


def pytest_unconfigure(config):
    if not _created:
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{LOCAL_POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in _created:
            conn.execute(sqlalchemy.text(f"drop database if exists {name} with (force)"))
    engine.dispose()
    os.environ.pop("NAS_META_TEST_POSTGRES", None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _host_without_bf16(monkeypatch):
    """Every host looks like a CPU without bf16 instructions to nas_meta (``cpu_has_bf16`` says no;
    torch's own probe, which inductor and the ONNX exporter ask too, is left alone), so ``--amp
    auto`` trains in fp32 and the suite's numbers do not depend on the machine; the tests of the
    rule fake both answers."""
    import nas_meta.learners.train

    monkeypatch.setattr(nas_meta.learners.train, "cpu_has_bf16", lambda: False)


@pytest.fixture
def outer_steps(monkeypatch) -> list:
    """The autocast dtype (None: fp32) of every outer step the trainer takes, in order."""
    import nas_meta.learners.train as train_module

    steps: list = []
    real = train_module.outer_step

    def recording(*args, autocast_dtype=None, **kwargs):
        steps.append(autocast_dtype)
        return real(*args, autocast_dtype=autocast_dtype, **kwargs)

    monkeypatch.setattr(train_module, "outer_step", recording)
    return steps


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a real filesystem of ``size`` (a tmpfs mounted under tmp_path,
    unmounted after the test), to fill up.  Needs Linux and root (or CAP_SYS_ADMIN); without them
    the test skips and says why."""
    mounted: list[Path] = []

    def mount(size: str = "1m") -> Path:
        if not sys.platform.startswith("linux"):
            pytest.skip(f"a tmpfs to fill needs Linux, not {sys.platform}")
        if os.geteuid() != 0:
            pytest.skip(f"mounting a tmpfs to fill needs root; this runs as uid {os.geteuid()}")
        command = shutil.which("mount")
        if command is None:
            pytest.skip("no mount command to make a small filesystem to fill")
        point = tmp_path / f"disk{len(mounted) or ''}"
        point.mkdir()
        done = subprocess.run(
            [command, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"mount refused a {size} tmpfs at {point}: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill_disk(point: Path, leave: int = 0) -> None:
    """Fill the filesystem at ``point`` to the last byte, then free ``leave`` bytes of it."""
    filler = point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave))


@pytest.fixture(name="fill_disk")
def fill_disk_fixture():
    """:func:`fill_disk`, for the tests."""
    return fill_disk
