"""Load: many workers on one PostgreSQL study, two of them killed and restarted, the database's
connections cut once; then the study is checked for what a scheduler must never do.

    .venv/bin/python -m bench.load postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.load URL --workers 3 --trials 20 --kills 1     # the CI version

A study of ``--trials`` smoke-preset trials (MAML on sinusoid, the mlp space: each trains in about
a second, so the storage is what is loaded) is created on the storage; ``--workers`` worker
processes (``nas-meta worker``, one thread each) fill it.  At random points of its progress
(10-60% of the trials counted, seeded) ``--kills``
workers are killed with SIGKILL (one with a trial running, where there is one) and a new worker
started in their place, and once every
connection to the database but this script's is terminated (``pg_terminate_backend``).  Then:

- ``lost``: requested trials that are not counted (the study must hold exactly ``--trials``);
- ``duplicated``: extra trainings of one architecture (two completed, counted trials with one
  fingerprint: two workers that took the same candidate, or a duplicate not caught);
- ``stuck``: trials left RUNNING after every worker has exited;
- every trial a killed worker was running is FAIL and retried (a later trial names it), unless it
  completed before the kill landed;
- ``crashed``: workers that exited with an error (their log's end is printed).

It prints trials per minute and last ``lost=0 duplicated=0 stuck=0 crashed=0 workers=8`` (the
counts found; the script exits 1 unless all are 0).  Needs a PostgreSQL server; the script
exits 2 with one line when it does not answer.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_worker(url: str, study: str, index: int, cache: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nas_meta", "worker", "--study", study, "--storage", url]
    cmd += ["--worker-index", str(index), "--threads", "1", "--cache-dir", cache]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = open(Path(cache) / f"worker-{index}.log", "w")  # noqa: SIM115  (the child writes it)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)


def terminate_connections(url: str) -> int:
    """Cut every other connection to the database (as a restart or failover would)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid()"
            )
        ).fetchall()
    engine.dispose()
    return len(rows)


def check(url: str, study_name: str, trials: int, killed: list[int]) -> dict[str, Any]:
    from optuna.trial import TrialState

    from nas_meta.record import Attr, counted_trials
    from nas_meta.search.study import load_study

    study = load_study(study_name, url)
    counted = counted_trials(study)
    trained = [t.user_attrs.get(Attr.FINGERPRINT) for t in counted if t.state == TrialState.COMPLETE]
    retried = {t.system_attrs.get("failed_trial") for t in study.trials}
    return {
        "lost": max(0, trials - len(counted)),
        "extra": max(0, len(counted) - trials),
        "duplicated": len(trained) - len(set(trained)),
        "stuck": len(study.get_trials(states=(TrialState.RUNNING,))),
        # A trial that completed before the SIGKILL landed (a duplicate ends in milliseconds) needs no retry.
        "unretried": sum(1 for n in killed if n not in retried and study.trials[n].state != TrialState.COMPLETE),
        "trials": len(study.trials),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from optuna.trial import TrialState

    from nas_meta.config import make_config
    from nas_meta.record import counted_trials
    from nas_meta.search.study import create_study, load_study

    rng = random.Random(args.seed)
    name = f"load-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(
            "smoke",
            data={"dataset": "sinusoid", "cache_dir": tmp},
            search={"space": "mlp", "study": name, "trials": args.trials, "storage": args.url},
            results_dir=tmp,
        )
        create_study(cfg, name, "regression")
        start = time.monotonic()
        workers = {i: start_worker(args.url, name, i, tmp) for i in range(1, args.workers + 1)}
        next_index = args.workers + 1
        # The kills and the cut fall at random points of the study's progress (fractions of the
        # trials counted), so they happen mid-run however fast this machine is.
        kill_at = sorted(rng.uniform(0.1, 0.6) for _ in range(args.kills))
        cut_at = rng.uniform(0.1, 0.6) if args.cut else None
        killed_trials: list[int] = []
        study = load_study(name, args.url)
        while any(w.poll() is None for w in workers.values()):
            now = time.monotonic() - start
            done = len(counted_trials(study)) / args.trials
            if kill_at and done >= kill_at[0]:
                kill_at.pop(0)
                alive = [i for i, w in workers.items() if w.poll() is None]
                owners = {t.user_attrs.get("worker", "") for t in study.get_trials(states=(TrialState.RUNNING,))}
                busy = [i for i in alive if any(f":{workers[i].pid}:" in owner for owner in owners)]
                victim = rng.choice(busy or alive)  # mid-trial where one is running: the case that matters
                running = [
                    t.number
                    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if f":{workers[victim].pid}:" in t.user_attrs.get("worker", "")
                ]
                os.kill(workers[victim].pid, signal.SIGKILL)
                workers[victim].wait()
                killed_trials += running
                print(f"{now:6.1f} s: killed worker {victim} (trials {running}); started worker {next_index}")
                workers[next_index] = start_worker(args.url, name, next_index, tmp)
                next_index += 1
            if cut_at is not None and done >= cut_at:
                print(f"{now:6.1f} s: terminated {terminate_connections(args.url)} database connections")
                cut_at = None
            if now > args.timeout:
                for w in workers.values():
                    w.kill()
                print(f"timed out after {args.timeout:.0f} s", file=sys.stderr)
                break
            time.sleep(0.1)
        minutes = (time.monotonic() - start) / 60
        # The end of a crashed worker's log: where its traceback says it failed.
        failed = {i: (w.returncode, (Path(tmp) / f"worker-{i}.log").read_text()[-6000:]) for i, w in workers.items()}
        for i, (code, err) in failed.items():
            if code not in (0, -signal.SIGKILL):
                print(f"worker {i} exited {code}: {err}")
        result = check(args.url, name, args.trials, killed_trials)
        result.update(minutes=minutes, trials_per_minute=args.trials / minutes, workers=args.workers)
        result["crashed"] = sum(1 for code, _ in failed.values() if code not in (0, -signal.SIGKILL))
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="postgresql://user@host:port/db")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--kills", type=int, default=2, help="workers killed with SIGKILL (and replaced)")
    parser.add_argument("--no-cut", dest="cut", action="store_false", help="do not terminate the connections")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import sqlalchemy

        sqlalchemy.create_engine(args.url).connect().close()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"load.py: error: PostgreSQL at {args.url!r} does not answer: {first}", file=sys.stderr)
        return 2
    r = run(args)
    print(
        f"{args.trials} trials by {args.workers} workers in {r['minutes']:.1f} min: "
        f"{r['trials_per_minute']:.1f} trials/min; {r['trials']} trials in the study; "
        f"killed trials not retried: {r['unretried']}; workers that crashed: {r['crashed']}"
    )
    print(
        f"lost={r['lost']} duplicated={r['duplicated']} stuck={r['stuck']} crashed={r['crashed']} "
        f"workers={r['workers']}"
    )
    ok = not (r["lost"] or r["extra"] or r["duplicated"] or r["stuck"] or r["unretried"] or r["crashed"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
