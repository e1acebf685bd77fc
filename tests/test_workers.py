"""Many workers on one study: journal file on one machine, PostgreSQL across machines; a worker
killed with SIGKILL leaves no trial RUNNING forever and its trial is retried."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from nas_meta.config import make_config
from nas_meta.errors import ConfigError
from nas_meta.record import Attr, counted_trials
from nas_meta.search.runner import run_search
from nas_meta.search.study import load_study
from nas_meta.search.workers import recover_dead_trials, worker_identity

POSTGRES = os.environ.get("NAS_META_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(
    not POSTGRES,
    reason="no PostgreSQL: none answers on 127.0.0.1:5432 and NAS_META_TEST_POSTGRES (a postgresql:// URL) is unset",
)


def sinusoid_cfg(tmp_path, study: str, trials: int, **search):
    return make_config(
        "smoke",
        data={"dataset": "sinusoid", "cache_dir": str(tmp_path / "cache")},
        search={"space": "mlp", "study": study, "trials": trials, **search},
        results_dir=str(tmp_path / "results"),
    )


def dead_identity() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host, _, _ = worker_identity().rsplit(":", 2)
    return f"{host}:{proc.pid}:?"


def test_a_dead_local_workers_trial_is_failed_and_queued_again(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    trial = study.ask({"x": optuna.distributions.CategoricalDistribution(["a", "b"])})
    trial.set_user_attr(Attr.WORKER, dead_identity())
    alive = study.ask({"x": optuna.distributions.CategoricalDistribution(["a", "b"])})
    alive.set_user_attr(Attr.WORKER, worker_identity())

    assert recover_dead_trials(study) == [trial.number]
    states = {t.number: t.state for t in study.trials}
    assert states[trial.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING  # a live worker's trial is left alone
    retry = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(retry) == 1
    assert retry[0].system_attrs["failed_trial"] == trial.number
    assert retry[0].params == trial.params
    assert recover_dead_trials(study) == []  # idempotent


def test_a_recovered_trial_whose_retry_was_cut_off_by_a_dropped_connection_is_queued_later(tmp_path, monkeypatch):
    from nas_meta.search import workers

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    dist = {"x": optuna.distributions.CategoricalDistribution(["a", "b"])}
    trial = study.ask(dist)
    trial.set_user_attr(Attr.WORKER, dead_identity())
    genuine = study.ask(dist)  # a trial that failed on its own is not a lost retry
    study.tell(genuine, state=TrialState.FAIL)

    class DropOnce:  # the connection drops after the trial is failed, before its retry is queued
        def __call__(self, study, frozen):
            monkeypatch.setattr(workers, "_retry_callback", real)
            raise optuna.exceptions.StorageInternalError("server closed the connection unexpectedly")

    real = workers._retry_callback
    monkeypatch.setattr(workers, "_retry_callback", DropOnce)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        recover_dead_trials(study)
    assert study.trials[trial.number].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert recover_dead_trials(study) == []  # not yet: another worker may be queuing it right now
    monkeypatch.setattr(workers, "REQUEUE_AFTER_S", 0.0)
    assert recover_dead_trials(study) == [trial.number]
    retry = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["failed_trial"] for t in retry] == [trial.number]
    assert retry[0].params == trial.params
    assert recover_dead_trials(study) == []  # queued once only
    rerun = study.ask()  # the retry runs and fails on its own (it carries its parent's attributes)
    assert rerun.number == retry[0].number
    study.tell(rerun, state=TrialState.FAIL)
    assert recover_dead_trials(study) == []


def test_a_trial_whose_process_died_before_naming_itself_is_recovered_and_waited_for(tmp_path, monkeypatch):
    from nas_meta.search import workers

    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": "o", "trials": 2},
        results_dir=str(tmp_path / "results"),
    )
    first = run_search(cfg.replace(search={"trials": 1}), stream=io.StringIO())
    # A process killed between creating its trial and naming itself left it RUNNING with no owner:
    # without recovery it would count as taken, and the search would stop one trial short.
    orphan = first.study.ask()
    monkeypatch.setattr(workers, "ORPHAN_AFTER_S", 0.5)
    time.sleep(0.6)
    again = run_search(cfg, stream=io.StringIO())
    states = {t.number: t.state for t in again.study.trials}
    assert states[orphan.number] == TrialState.FAIL
    assert len(counted_trials(again.study)) == 2
    assert not again.study.get_trials(states=(TrialState.RUNNING,))


def test_two_local_workers_share_a_journal_study(tmp_path):
    cfg = sinusoid_cfg(tmp_path, "j", trials=4)
    outcome = run_search(cfg, stream=io.StringIO(), workers=2)
    assert outcome.storage.startswith("journal:///")
    study = outcome.study
    assert len(counted_trials(study)) == 4
    trained = [t.user_attrs[Attr.FINGERPRINT] for t in counted_trials(study)]
    assert len(trained) == len(set(trained))  # no architecture trained by both workers
    log = (tmp_path / "results" / "j" / "worker-1.log").read_text()
    assert "worker 1 ran" in log


def test_several_workers_need_a_concurrent_storage(tmp_path, capsys):
    from nas_meta.cli import main

    args = [
        "search",
        "--preset",
        "smoke",
        "--space",
        "mlp",
        "--dataset",
        "sinusoid",
        "--study",
        "q",
        "--results-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--trials",
        "1",
    ]
    assert main(args) == 0  # a SQLite study
    capsys.readouterr()
    assert main([*args, "--trials", "2", "--n-workers", "2"]) == 2
    assert "is in SQLite" in capsys.readouterr().err


def _worker(storage: str, study: str, index: int, tmp_path, env: dict | None = None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "nas_meta",
        "worker",
        "--study",
        study,
        "--storage",
        storage,
        "--worker-index",
        str(index),
        "--threads",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _create(tmp_path, storage: str, trials: int, iterations: int = 6) -> str:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    cfg = sinusoid_cfg(tmp_path, name, trials=trials, storage=storage).replace(
        learner={"iterations": iterations, "eval_every": iterations}
    )
    from nas_meta.search.study import create_study

    create_study(cfg, name, "regression")
    return name


@needs_postgres
def test_two_workers_against_postgres_finish_the_study(tmp_path):
    name = _create(tmp_path, POSTGRES, trials=5)
    workers = [_worker(POSTGRES, name, i, tmp_path) for i in (1, 2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = load_study(name, POSTGRES)
    counted = counted_trials(study)
    assert len(counted) == 5
    assert all(t.state == TrialState.COMPLETE for t in counted)
    trained = [t.user_attrs[Attr.FINGERPRINT] for t in counted]
    assert len(trained) == len(set(trained))  # no architecture trained by both workers
    ran = [int(out.split(" ran ")[1].split()[0]) for out in outputs]
    assert sum(ran) == 5 and all(r >= 1 for r in ran), outputs  # both did work


@needs_postgres
def test_a_worker_killed_mid_trial_is_retried_by_another(tmp_path):
    name = _create(tmp_path, POSTGRES, trials=2, iterations=400)  # long enough to be killed mid-trial
    victim = _worker(POSTGRES, name, 1, tmp_path)
    study = load_study(name, POSTGRES)
    deadline = time.time() + 120
    while time.time() < deadline:
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and "arch" in running[0].user_attrs:  # choices made: killed mid-training
            break
        time.sleep(0.2)
    else:
        victim.kill()
        pytest.fail("the worker never started a trial")
    killed = running[0].number
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()

    # The rescuer runs the same study (its stored config): 400 MAML steps on sinusoid take seconds.
    rescuer = _worker(POSTGRES, name, 2, tmp_path)
    out = rescuer.communicate(timeout=600)[0]
    assert rescuer.returncode == 0, out
    study = load_study(name, POSTGRES)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    by_number = {t.number: t for t in study.trials}
    assert by_number[killed].state == TrialState.FAIL
    assert "died" in by_number[killed].system_attrs["interrupted"]
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == by_number[killed].params
    assert len(counted_trials(study)) == 2


def test_workers_are_spread_over_the_visible_gpus() -> None:
    from nas_meta.errors import ConfigError
    from nas_meta.search.runner import worker_devices

    assert worker_devices("auto", 5, visible=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda", 3, visible=4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices("auto", 3, visible=1) == ["auto"] * 3  # one GPU (or none): all on it
    assert worker_devices("cpu", 2, visible=8) == ["cpu", "cpu"]  # asked for the CPU: stays there
    picked = worker_devices("auto", 4, visible=4, devices=["cuda:0", "cuda:2"])
    assert picked == ["cuda:0", "cuda:2", "cuda:0", "cuda:2"]
    with pytest.raises(ConfigError, match="this machine has 2 GPU"):
        worker_devices("auto", 2, visible=2, devices=["cuda:0", "cuda:3"])


def test_each_worker_samples_from_its_own_seed_and_the_same_index_repeats(tmp_path) -> None:
    """Workers of one study get the run seed plus their index, so a parallel search reproduces
    (Optuna's parallel workers would otherwise share or randomise seeds: optuna#4412)."""
    from nas_meta.config import make_config
    from nas_meta.search.study import create_study, load_study

    cfg = make_config(
        "smoke", search={"space": "chain", "study": "seeds", "sampler": "random"}, seed=3, results_dir=str(tmp_path)
    )
    (tmp_path / "seeds").mkdir()
    create_study(cfg, "seeds", "classification")
    url = f"sqlite:///{tmp_path}/seeds/study.db"
    first = [load_study("seeds", url, worker_index=i).sampler._rng.rng.randint(0, 2**31) for i in (1, 2, 1)]
    assert first[0] == first[2] and first[0] != first[1]
    expected = __import__("optuna").samplers.RandomSampler(seed=3 + 2)._rng.rng.randint(0, 2**31)
    assert first[1] == expected


def _sqlite_study(tmp_path, name="drop"):
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path}/drop.db")


def test_a_dropped_storage_connection_is_waited_out_and_the_orphaned_trial_retried(tmp_path, monkeypatch):
    from nas_meta.search import workers

    monkeypatch.setattr(workers, "BACKOFF_SECONDS", (0.0, 0.0, 0.0))
    study = _sqlite_study(tmp_path)
    storage = study._storage
    real_attr, real_state = storage.set_trial_user_attr, storage.set_trial_state_values
    down = {"cuts": 2, "now": False}

    def cut():
        # What Optuna raises when the server terminates the connection mid-commit.
        try:
            raise sqlalchemy.exc.OperationalError(
                "INSERT ...", {}, Exception("terminating connection due to administrator command")
            )
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    def set_attr(trial_id, key, value):
        if key == "progress" and down["cuts"]:
            down["cuts"] -= 1
            down["now"] = True
            cut()  # mid-trial, under this worker's name
        return real_attr(trial_id, key, value)

    def set_state(trial_id, state, values=None):
        if down["now"]:
            down["now"] = False
            cut()  # Optuna's own try to fail the trial is cut too: it stays RUNNING
        return real_state(trial_id, state, values)

    monkeypatch.setattr(storage, "set_trial_user_attr", set_attr)
    monkeypatch.setattr(storage, "set_trial_state_values", set_state)

    def objective(trial):
        trial.set_user_attr("progress", 1)
        return trial.suggest_float("x", 0, 1)

    ran = workers.optimize_until(study, objective, target=3)
    assert ran == 3 and len(counted_trials(study)) == 3
    assert not study.get_trials(states=(TrialState.RUNNING,))  # none left RUNNING
    orphans = [
        t
        for t in study.trials
        if t.state == TrialState.FAIL and t.system_attrs.get("interrupted") == "the storage dropped the connection"
    ]
    assert len(orphans) == 2
    retried = {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}
    assert {t.number for t in orphans} <= retried  # each orphan's params queued again


def test_a_storage_that_stays_unreachable_ends_the_worker_in_one_line(tmp_path, monkeypatch):
    from nas_meta.errors import StudyError
    from nas_meta.search import workers

    monkeypatch.setattr(workers, "BACKOFF_SECONDS", (0.0, 0.0))
    study = _sqlite_study(tmp_path)

    def down(*args, **kwargs):
        raise optuna.exceptions.StorageInternalError("could not connect to server: Connection refused\nmore")

    monkeypatch.setattr(study, "optimize", down)
    with pytest.raises(
        StudyError, match=r"^the study's storage is unreachable \(3 tries over 0 s\): could not connect"
    ):
        workers.optimize_until(study, lambda t: 0.0, target=2)


@needs_postgres
def test_a_worker_that_stops_beating_on_another_machine_is_failed_by_the_heartbeat(tmp_path):
    """The cross-machine path: the victim's process lives (SIGSTOP) but its heartbeat stops, so
    only the storage's heartbeat can tell; the rescuer fails the stale trial and retries it."""
    env = {**os.environ, "NAS_META_HEARTBEAT_S": "1", "NAS_META_GRACE_S": "4"}
    name = _create(tmp_path, POSTGRES, trials=2, iterations=400)
    victim = _worker(POSTGRES, name, 1, tmp_path, env=env)
    study = load_study(name, POSTGRES)
    deadline = time.time() + 120
    while time.time() < deadline:
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and "arch" in running[0].user_attrs:
            break
        time.sleep(0.2)
    else:
        victim.kill()
        pytest.fail("the worker never started a trial")
    stalled = running[0].number
    os.kill(victim.pid, signal.SIGSTOP)  # alive to `kill -0`, silent to the storage
    try:
        # A rescuer that comes after the grace period (a worker that comes sooner and finishes
        # first leaves the stale trial to the next run, which reclaims it the same way).
        time.sleep(6)
        rescuer = _worker(POSTGRES, name, 2, tmp_path, env=env)
        out = rescuer.communicate(timeout=600)[0]
        assert rescuer.returncode == 0, out
    finally:
        victim.kill()
        victim.wait()
    study = load_study(name, POSTGRES)
    by_number = {t.number: t for t in study.trials}
    assert by_number[stalled].state == TrialState.FAIL
    assert "interrupted" not in by_number[stalled].system_attrs  # not the same-machine process check
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == stalled]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert len(counted_trials(study)) == 2


def test_a_full_disk_under_the_sqlite_study_stops_at_once_naming_the_database(small_disk, fill_disk, monkeypatch):
    from nas_meta.errors import StudyError
    from nas_meta.search import workers

    monkeypatch.setattr(workers, "BACKOFF_SECONDS", (30.0,))  # a wait would show in the time taken
    mount = small_disk("1m")
    database = mount / "study.db"
    study = optuna.create_study(storage=f"sqlite:///{database}", study_name="s")
    fill_disk(mount)

    def objective(trial):
        trial.set_user_attr("log", "x" * 50_000)  # every trial needs new pages
        return trial.suggest_float("x", 0, 1)

    start = time.monotonic()
    with pytest.raises(StudyError) as caught:
        workers.optimize_until(study, objective, target=20)
    assert time.monotonic() - start < 20, "a full disk was waited on like a dropped connection"
    message = str(caught.value)
    assert message == f"no space left on the disk of {database}; free space and resume the study"


def test_a_connection_dropped_while_a_worker_starts_or_ends_is_waited_out(tmp_path, monkeypatch):
    import sqlalchemy.exc

    from nas_meta.search import runner, workers
    from nas_meta.search.study import create_study

    monkeypatch.setattr(workers, "BACKOFF_SECONDS", (0.0, 0.0, 0.0))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    create_study(sinusoid_cfg(tmp_path, "w", trials=2, storage=storage), "w", "regression")
    drops = {"stored_config": 1, "trials_frame": 1}

    def dropping(name):
        real = getattr(runner, name)

        def call(*args, **kwargs):
            if drops[name]:
                drops[name] -= 1
                # How psycopg's AdminShutdown reaches us through sqlalchemy when the server cuts us off.
                raise sqlalchemy.exc.OperationalError(
                    "SELECT ...", {}, Exception("terminating connection due to administrator command")
                )
            return real(*args, **kwargs)

        return call

    for name in drops:
        monkeypatch.setattr(runner, name, dropping(name))
    outcome = runner.run_worker("w", storage, stream=io.StringIO())
    assert drops == {"stored_config": 0, "trials_frame": 0}  # both calls were cut once, and retried
    assert outcome.ran == 2 and len(outcome.table) == 2


# --- the default number of processes ---------------------------------------------------------------


def test_default_workers_is_one_per_core_on_the_cpu_and_one_on_a_gpu(monkeypatch):
    from nas_meta.search import runner

    monkeypatch.delenv(runner.WORKERS_ENV)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert runner.default_workers("cpu", visible=0) == 2
    assert runner.default_workers("auto", visible=0) == 2
    assert runner.default_workers("auto", visible=1) == 1  # a GPU: one process
    assert runner.default_workers("cuda", visible=1) == 1
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 64)
    assert runner.default_workers("cpu", visible=0) == runner.AUTO_WORKERS_MAX
    monkeypatch.setattr(runner.os, "cpu_count", lambda: None)
    assert runner.default_workers("cpu", visible=0) == 1
    monkeypatch.setenv(runner.WORKERS_ENV, "3")
    assert runner.default_workers("cpu", visible=0) == 3
    monkeypatch.setenv(runner.WORKERS_ENV, "many")
    with pytest.raises(ConfigError, match="NAS_META_N_WORKERS='many' must be a positive integer"):
        runner.default_workers("cpu", visible=0)


def test_a_search_without_n_workers_runs_one_process_per_core(monkeypatch, tmp_path):
    from nas_meta.search import runner

    monkeypatch.delenv(runner.WORKERS_ENV)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        learner={"algo": "protonet"},
        search={"space": "chain", "study": "auto", "trials": 3, "race": 0},
        results_dir=str(tmp_path / "results"),
        device="cpu",
    )
    out = io.StringIO()
    outcome = runner.run_search(cfg, stream=out, workers=None)
    assert outcome.storage.startswith("journal:")  # several writers: Optuna's journal file
    assert "2 processes train candidates, 1 thread(s) each" in out.getvalue()
    assert (outcome.directory / "worker-1.log").is_file()
    assert len(counted_trials(outcome.study)) >= 3
    # Resumed the same way, it goes on in its journal file.
    more = runner.run_search(cfg.replace(search={"trials": 5}), stream=io.StringIO(), workers=None)
    assert more.storage == outcome.storage and len(counted_trials(more.study)) >= 5
    # A study started in SQLite by one process resumes as one process, not refused.
    one = runner.run_search(cfg.replace(search={"study": "one"}), stream=io.StringIO(), workers=1)
    assert one.storage.startswith("sqlite:")
    out = io.StringIO()
    again = runner.run_search(cfg.replace(search={"study": "one", "trials": 4}), stream=out, workers=None)
    assert again.storage == one.storage and len(counted_trials(again.study)) == 4
    assert "study 'one' is in SQLite, which takes one writer: one process" in out.getvalue()
