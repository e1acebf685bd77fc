"""The study is the record of a search: storage, naming, and the stored run config (its sampler
and pruner are built from the registries of samplers.py).

Every trial stores its params, fingerprint, architecture JSON, parameter count, FLOPs, training
time and validation score; the study stores the run's whole config, so that ``worker``,
``export`` and ``analyze`` need only the study name and the storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from ..config import LEGACY_SEARCH, MAX_SEED, RunConfig
from ..errors import ConfigError, StudyError
from ..record import FORMAT_VERSION, StudyAttr
from ..spaces import Space
from .samplers import PRUNERS, SAMPLERS

__all__ = [
    "default_study_name",
    "study_dir",
    "storage_url",
    "check_persistent",
    "open_storage",
    "create_study",
    "space_record",
    "check_space",
    "load_study",
    "stored_config",
    "redact_url",
    "STUDY_SETTINGS",
    "adopt_study_settings",
]


# A trial that stopped through no fault of its candidate (killed process, Ctrl-C) is retried and
# does not use up the budget; one whose candidate diverged or ran out of time does.

# A candidate scored only by a training-free proxy and not meta-trained (screening.py).  Such a
# trial never uses up the budget: --trials counts meta-trained candidates.

# A dead worker's heartbeat stops; after the grace period its RUNNING trial is failed and re-queued.
# NAS_META_HEARTBEAT_S / NAS_META_GRACE_S change them (a test's seconds, a cluster's policy).
HEARTBEAT_INTERVAL_S = int(os.environ.get("NAS_META_HEARTBEAT_S", "30"))
GRACE_PERIOD_S = int(os.environ.get("NAS_META_GRACE_S", "120"))


def default_study_name(cfg: RunConfig) -> str:
    """``<space>-<algo>-<dataset>``, with a space file's stem standing for its name."""
    space = Path(cfg.search.space).stem if cfg.search.space.endswith((".yaml", ".yml")) else cfg.search.space
    return f"{space}-{cfg.learner.algo}-{cfg.data.dataset}"


def study_dir(results_dir: str | Path, study_name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", study_name) or study_name in (".", ".."):
        raise ConfigError(f"bad study name {study_name!r}: use letters, digits, '.', '_' and '-' only")
    return Path(results_dir) / study_name


def storage_url(cfg: RunConfig, study_name: str, workers: int = 1) -> str:
    """The storage the user gave; else the study folder's existing one; else SQLite in
    ``results/<study>/study.db`` for one process, or Optuna's journal file
    ``results/<study>/journal.log`` for several (SQLite locks up under concurrent writers)."""
    if cfg.search.storage:
        check_persistent(cfg.search.storage)
        return cfg.search.storage
    directory = study_dir(cfg.results_dir, study_name).resolve()
    journal, sqlite = directory / "journal.log", directory / "study.db"
    if journal.exists() or (workers > 1 and not sqlite.exists()):
        return f"journal:///{journal}"
    return f"sqlite:///{sqlite}"


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def public_config(cfg: RunConfig) -> RunConfig:
    """The config with the storage URL's password redacted, for records people read and share."""
    if cfg.search.storage:
        return cfg.replace(search={"storage": redact_url(cfg.search.storage)})
    return cfg


# A connection that was open and then cut (not a wrong URL, which fails at once) is tried again.
DROPPED_CONNECTION_WAITS = (1.0, 2.0, 4.0, 8.0)
_DROPPED = ("terminating connection", "server closed the connection", "connection reset", "adminshutdown")


def dropped_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says an established database connection was cut."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(marker in text for marker in _DROPPED)


def check_persistent(url: str) -> None:
    """ConfigError for an in-memory SQLite URL (``sqlite://``, ``sqlite:///:memory:``, a
    ``mode=memory`` URI): its study vanishes with the process, so it could not be resumed, joined
    by workers or exported, and Optuna's heartbeat thread, which opens its own connection, finds
    no tables there and fails over and over."""
    if not url.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # malformed: open_storage says so
    database = parsed.database or ""
    query = {key: str(value) for key, value in parsed.query.items()}
    if database in ("", ":memory:") or database.startswith("file::memory:") or query.get("mode") == "memory":
        raise ConfigError(
            f"--storage {redact_url(url)!r} is an in-memory database: the study would vanish when this process "
            "ends (no resume, no workers, no export); give a file, e.g. sqlite:///results/study.db, "
            "or leave --storage out for the study folder's own"
        )


def open_storage(url: str, *, study: str | None = None) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats (so a killed worker's trial is retried), or Optuna's own
    handling for other URL kinds.  A URL that cannot be opened is a user error.

    ``study`` is given by the commands that only read (worker, export, analyze): the name they
    look for.  Opening a storage creates it (an SQLite file, a journal file, Optuna's tables in a
    database), so one that does not exist yet is refused as "no study" before anything is written."""
    check_persistent(url)
    if url.startswith("journal:///"):
        # Optuna's file journal: safe for many processes on one machine (no heartbeats there;
        # workers.recover_dead_trials retries a dead local worker's trial instead).
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal://") :])
        if study is not None and not path.is_file():
            raise StudyError(f"no study {study!r}: no journal file at {str(path.resolve())!r}")
        if not path.parent.is_dir():
            raise StudyError(f"cannot open storage {url!r}: no folder {str(path.parent)!r}")
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        if study is not None:
            database = _sqlite_file(url)
            if database is not None and not database.is_file():
                raise StudyError(f"no study {study!r}: no database at {str(database.resolve())!r}")
        for wait in (*DROPPED_CONNECTION_WAITS, None):
            try:
                if study is not None and not _has_optuna_tables(url):
                    break
                with warnings.catch_warnings():  # heartbeats are "experimental" since optuna 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url,
                        heartbeat_interval=HEARTBEAT_INTERVAL_S,
                        grace_period=GRACE_PERIOD_S,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                        engine_kwargs=_engine_kwargs(url),
                    )
            except Exception as exc:  # sqlalchemy raises many kinds; all mean "cannot open this URL"
                if wait is not None and dropped_connection(exc):
                    time.sleep(wait)  # a connection cut mid-way (restart, failover): try again
                    continue
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StudyError(f"cannot open storage {redact_url(url)!r}: {redact_url(reason)}") from None
        raise StudyError(f"no study {study!r}: {redact_url(url)!r} holds no Optuna studies (it has no 'studies' table)")
    raise ConfigError(
        f"unsupported storage URL {redact_url(url)!r}; use sqlite:///PATH, journal:///PATH or postgresql://USER@HOST/DB"
    )


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite: wait for the heartbeat thread's write instead of "database is locked".
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}


def _sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for another kind of URL, or one SQLAlchemy cannot parse:
    opening it says why)."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database or ""
    except ArgumentError:
        return None
    if database.startswith("file:"):  # an SQLite URI (?uri=true): the path before its own options
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def _has_optuna_tables(url: str) -> bool:
    """Whether the database already has Optuna's schema, asked without creating it (RDBStorage
    would create the tables on opening).  An SQLite file must exist: connecting creates one."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


def directions(cfg: RunConfig, task: str) -> list[Literal["minimize", "maximize"]]:
    metric: Literal["minimize", "maximize"] = "maximize" if task == "classification" else "minimize"
    if cfg.search.sampler == "nsga2":
        return [metric, "minimize"]  # validation score, parameter count: a Pareto front
    return [metric]


def create_study(
    cfg: RunConfig, study_name: str, task: str, *, workers: int = 1, space: Space | None = None
) -> optuna.Study:
    """Create the study, or open it to resume; the first run's config is the study's record.

    ``space`` is the loaded space the run searches: a new study records it (:func:`space_record`),
    and a resumed one must still search the space it started with (:func:`check_space`)."""
    if cfg.search.sampler == "nsga2" and cfg.search.pruner != "none":
        raise ConfigError(
            f"--pruner {cfg.search.pruner!r} cannot be used with --sampler nsga2: Optuna cannot "
            "prune multi-objective studies; use --pruner none"
        )
    if cfg.search.sampler == "nsga2" and cfg.search.strategy == "supernet":
        raise ConfigError(
            "--strategy supernet cannot be used with --sampler nsga2: candidates scored on inherited weights "
            "are recorded as pruned trials, which multi-objective studies cannot hold; choose another --sampler"
        )
    if cfg.search.sampler == "nsga2" and cfg.search.prescreen is not None:
        raise ConfigError(
            f"--prescreen {cfg.search.prescreen!r} cannot be used with --sampler nsga2: screened "
            "candidates are recorded as pruned trials, which multi-objective studies cannot hold; drop --prescreen"
        )
    storage = open_storage(storage_url(cfg, study_name, workers))
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=SAMPLERS.get(cfg.search.sampler)(cfg.seed),
        pruner=PRUNERS.get(cfg.search.pruner)(cfg),
        directions=directions(cfg, task),
        load_if_exists=True,
    )
    stored = study.user_attrs.get(StudyAttr.CONFIG)
    if stored is None:
        if space is not None:  # before the config, whose presence marks a study as started
            study.set_user_attr(StudyAttr.SPACE, space_record(space))
        # The stored record never holds a password: workers are given the storage URL anyway.
        study.set_user_attr(StudyAttr.CONFIG, public_config(cfg).to_dict())
        study.set_user_attr(StudyAttr.TASK, task)
        study.set_user_attr(StudyAttr.FORMAT, FORMAT_VERSION)
    else:
        _check_resumable(RunConfig.from_dict(_upgrade(stored)), cfg, study_name)
        if space is not None:
            check_space(study, space)
    return study


# Attributes of a Space that are not what it searches: its label, its file and its prose.
_SPACE_LABELS = ("name", "path", "description", "recipe")


def space_record(space: Space) -> dict[str, Any]:
    """What a space searches, as parsed (so a comment or a reformatting of its file is no change):
    its kind, its settings (the file's keys as read, fixed or not), its choices with their options,
    its training choices, and a hash of them all.

        >>> from nas_meta.spaces import load_space
        >>> record = space_record(load_space("mlp"))
        >>> record["settings"]["width"], record["choices"]["depth"]
        ([20, 40, 80], [1, 2, 3, 4])
    """
    settings: dict[str, Any] = {}
    for key, value in vars(space).items():
        if key.startswith("_") or key in _SPACE_LABELS:
            continue
        # A kind's per-block options (chain, mlp) are the file's keys themselves: name them so.
        settings.update(value if isinstance(value, dict) else {key: value})
    parsed = {"kind": space.kind, "settings": settings, "choices": space.choices(), "recipe": dict(space.recipe)}
    # JSON as a study attribute stores it (tuples become lists), so a stored record compares equal.
    parsed = json.loads(json.dumps(parsed, default=repr))
    text = json.dumps(parsed, sort_keys=True)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), **parsed}


def check_space(study: optuna.Study, space: Space) -> None:
    """StudyError when ``space`` is not the space the study started with, naming what changed:
    resuming would mix candidates of two spaces in one study.  A study started before spaces were
    recorded has nothing to compare with and resumes as it is."""
    stored = study.user_attrs.get(StudyAttr.SPACE)
    if not isinstance(stored, dict):
        return
    now = space_record(space)
    if stored.get("sha256") == now["sha256"]:
        return
    change = "the space is not the one it started with"
    if stored.get("kind") != now["kind"]:
        change = f"the space's kind was {stored.get('kind')!r} when the study started, now {now['kind']!r}"
    else:
        for part, what in (("settings", "setting"), ("recipe", "training choice"), ("choices", "choice")):
            old, new = stored.get(part) or {}, now[part]
            differing = [key for key in [*new, *old] if not _same(old.get(key, _ABSENT), new.get(key, _ABSENT))]
            if differing:
                key = differing[0]
                before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
                # A key whose options some choice offers is, to the user, that choice (a chain's
                # width is every block's); a list that is no choice's options is a setting (a layout).
                offered = [*(stored.get("choices") or {}).values(), *now["choices"].values()]
                if part == "settings" and any(_same(v, options) for v in (before, after) for options in offered):
                    what = "choice"
                change = f"the space's {what} {key!r} was {_shown(before)} when the study started, now {_shown(after)}"
                break
    raise StudyError(f"study {study.study_name!r}: {change}; resume with the original file or choose another --study")


_ABSENT = object()


def _same(a: Any, b: Any) -> bool:
    # As the hash sees them: 1 and 1.0, or 1 and true, are different options to a space.
    return a is b or (
        a is not _ABSENT and b is not _ABSENT and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    )


def _shown(value: Any) -> str:
    return "absent" if value is _ABSENT else repr(value)


# Settings a study keeps from its first run whatever a resumed run asks: each changes what its
# numbers mean (the streams candidates were trained on, how the pick is chosen), and a study
# started before a setting existed resumes as it started (config.LEGACY_SEARCH).
STUDY_SETTINGS = (
    "crn",
    "race",
    "race_iterations",
    "race_blocks",
    "race_episodes",
    "race_rule",
    "baselines",
    "precision",
)


def adopt_study_settings(study: optuna.Study, cfg: RunConfig) -> tuple[RunConfig, list[str]]:
    """``cfg`` with the study's own :data:`STUDY_SETTINGS`, and one line per setting that differs
    from what ``cfg`` asked for (to tell the user)."""
    stored = stored_config(study).search
    notes, changes = [], {}
    for name in STUDY_SETTINGS:
        old, new = getattr(stored, name), getattr(cfg.search, name)
        if old != new:
            changes[name] = old
            notes.append(f"study {study.study_name!r} keeps {name}={old!r} from its first run (not {new!r})")
    return (cfg.replace(search=changes) if changes else cfg), notes


def _upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored config as this version reads it: settings it predates take their legacy values."""
    search = dict(doc.get("search", {}))
    for name, value in LEGACY_SEARCH.items():
        search.setdefault(name, value)
    if search.get("precision") is None:  # before the precision was stored: its --amp said it
        search["precision"] = "bf16" if doc.get("learner", {}).get("amp") in (True, "on") else "fp32"
    return {**doc, "search": search}


def _check_resumable(stored: RunConfig, cfg: RunConfig, study_name: str) -> None:
    """A study resumes only with the settings that give its scores their meaning."""
    keys = {
        "space": (stored.search.space, cfg.search.space),
        "algo": (stored.learner.algo, cfg.learner.algo),
        "dataset": (stored.data.dataset, cfg.data.dataset),
        "ways": (stored.data.ways, cfg.data.ways),
        "shots": (stored.data.shots, cfg.data.shots),
        "queries": (stored.data.queries, cfg.data.queries),
        "split": (stored.data.split, cfg.data.split),
        "image_size": (stored.data.image_size, cfg.data.image_size),
        "preset": (stored.preset, cfg.preset),
        "iterations": (stored.learner.iterations, cfg.learner.iterations),
        "meta_batch": (stored.learner.meta_batch, cfg.learner.meta_batch),
        "sampler": (stored.search.sampler, cfg.search.sampler),
        # Halving validates on its rungs' episodes, so its scores are on another footing.
        "pruner": (stored.search.pruner, cfg.search.pruner)
        if "halving" in (stored.search.pruner, cfg.search.pruner)
        else (None, None),
    }
    # The training recipe gives a score its meaning as much as the budget does.
    old_recipe, new_recipe = stored.recipe(), cfg.recipe()
    # (Except the refit, which only final models use.)
    keys.update({name: (old_recipe[name], new_recipe[name]) for name in old_recipe if name != "refit"})
    for key, (old, new) in keys.items():
        if old != new:
            raise StudyError(
                f"study {study_name!r} was run with {key}={old!r}, not {new!r}; "
                f"resume it with the same settings or choose another --study"
            )


def load_study(study_name: str, storage: str, *, worker_index: int | None = None) -> optuna.Study:
    """Open an existing study (for worker, export, analyze); a missing one is a user error.

    With ``worker_index`` the study gets its stored sampler and pruner, the sampler seeded with
    ``seed + worker_index`` so that workers do not all propose the same architectures."""
    backend = open_storage(storage, study=study_name)
    names = optuna.get_all_study_names(storage=backend)
    if study_name not in names:
        raise StudyError(f"no study {study_name!r} in {redact_url(storage)!r}; studies there: {sorted(names)}")
    study = optuna.load_study(study_name=study_name, storage=backend, sampler=None)
    if worker_index is None:
        return study
    cfg = stored_config(study)
    return optuna.load_study(
        study_name=study_name,
        storage=backend,
        # Wrapped into the range Optuna's samplers take (their numpy RandomState): a seed near
        # MAX_SEED or a negative --worker-index would otherwise fail inside the sampler.
        sampler=SAMPLERS.get(cfg.search.sampler)((cfg.seed + worker_index) % (MAX_SEED + 1)),
        pruner=PRUNERS.get(cfg.search.pruner)(cfg),
    )


def stored_config(study: optuna.Study) -> RunConfig:
    doc: Any = study.user_attrs.get(StudyAttr.CONFIG)
    if doc is None:
        raise StudyError(f"study {study.study_name!r} was not made by nas_meta (no stored config)")
    return RunConfig.from_dict(_upgrade(doc))


def study_task(study: optuna.Study) -> str:
    return study.user_attrs.get(StudyAttr.TASK, "classification")


def _local_studies(results_dir: str | Path) -> dict[str, str]:
    """Study folders under ``results_dir`` -> their storage URL."""
    found = {}
    root = Path(results_dir)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        journal, sqlite = folder / "journal.log", folder / "study.db"
        if journal.is_file():
            found[folder.name] = f"journal:///{journal.resolve()}"
        elif sqlite.is_file():
            found[folder.name] = f"sqlite:///{sqlite.resolve()}"
    return found


def find_studies(patterns: list[str], storage: str | None, results_dir: str | Path) -> list[tuple[str, str]]:
    """(name, storage URL) of the studies named by ``patterns`` (names or shell globs), looked up
    in ``storage`` when given, else in the study folders under ``results_dir``."""
    import fnmatch

    if storage:
        backend = open_storage(storage, study=patterns[0] if patterns else "")  # read: never created
        available = {name: storage for name in optuna.get_all_study_names(storage=backend)}
        where = redact_url(storage)
    else:
        available = _local_studies(results_dir)
        where = str(results_dir)
    chosen: dict[str, str] = {}
    for pattern in patterns:
        matches = [n for n in available if fnmatch.fnmatchcase(n, pattern)]
        if not matches:
            raise StudyError(f"no study {pattern!r} in {where!r}; studies there: {sorted(available)}")
        chosen.update((n, available[n]) for n in sorted(matches))
    return list(chosen.items())
