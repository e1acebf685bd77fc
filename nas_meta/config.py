"""Typed, frozen configuration: what the CLI builds and the library reads.

Every field has a default and a reason.  ``RunConfig`` round-trips through JSON (``to_dict`` /
``from_dict``) because the study stores the whole run config: ``worker``, ``export`` and
``analyze`` need nothing but the study name and storage.

    >>> cfg = make_config("smoke", search={"space": "chain"})
    >>> RunConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

__all__ = [
    "DataConfig",
    "LearnerConfig",
    "SearchConfig",
    "RunConfig",
    "PRESETS",
    "make_config",
    "DEVICES",
    "is_device_name",
    "MAX_COUNTS",
    "check_count",
    "MAX_SEED",
    "check_seed",
    "LR_SCHEDULES",
    "CHECKPOINTS",
    "REFITS",
    "DEFAULT_PRESCREEN_POOL",
    "STRATEGIES",
    "DEFAULT_SUPERNET_POOL",
    "DEFAULT_SUPERNET_STEPS",
    "CRN_MODES",
    "RACE_RULES",
    "AMP_MODES",
    "PRECISIONS",
    "BF16_SPACE_KINDS",
    "LEGACY_SEARCH",
    "RECIPE_FIELDS",
    "RACE_STEPS_FACTOR",
    "BUDGET_FIELDS",
    "BUDGET_FLOORS",
    "PROTOCOL_COUNTS",
]

# Learners, samplers and pruners are named by their registries (learners.LEARNERS,
# search.samplers.SAMPLERS / PRUNERS), so one registered from outside the package is
# accepted here; search.runner.check_names refuses an unknown name before anything is written.
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N, one GPU of several (is_device_name)


def is_device_name(name: Any) -> bool:
    """One of DEVICES, or ``cuda:N`` (the N-th visible GPU)."""
    return isinstance(name, str) and (name in DEVICES or re.fullmatch(r"cuda:\d+", name) is not None)


LR_SCHEDULES = ("constant", "cosine")
CHECKPOINTS = ("best", "last")
REFITS = ("train", "train+val")
DEFAULT_PRESCREEN_POOL = 8  # candidates screened per meta-trained one when --prescreen is given
# How candidates are found: "scratch" (each meta-trained from its own initialisation),
# "supernet" (each meta-trained one picked from a pool scored on weights inherited from one
# meta-trained supernet of the space) or "darts" (a differentiable search of a cell space).
STRATEGIES = ("scratch", "supernet", "darts")
DEFAULT_SUPERNET_POOL = 32  # candidates scored on inherited weights per meta-trained one
# The pools a preset screens per meta-trained candidate (--prescreen, --strategy supernet): scaled
# with its candidates like every budget (a smoke search screened 64 candidates for 2 trials).
SCREENING_POOLS: dict[str, dict[str, int]] = {
    "smoke": {"prescreen": 2, "supernet": 4},
    "quick": {"prescreen": DEFAULT_PRESCREEN_POOL, "supernet": DEFAULT_SUPERNET_POOL},
    "paper": {"prescreen": DEFAULT_PRESCREEN_POOL, "supernet": DEFAULT_SUPERNET_POOL},
}
DEFAULT_SUPERNET_STEPS = 500  # meta-training steps of the supernet or of the DARTS network
# The race trains its entrants this many times as long as the candidates.  Measured (results/README.md,
# section 6): at 1x it kept to the trials' CPU and returned Conv-4 in 5 of 6 rows (one forfeited win,
# one loss of 1.0 point); at 3x it picked the 5-way ProtoNet winner but also a 20-way loser (-2.1)
# and a first-order MAML network that lost by 13.6 points on test (its training fails on some
# seeds, which two blocks cannot see), at 2.25x the trials' training.  No evidence for the dearer race.
RACE_STEPS_FACTOR = 1
# Common random numbers (search/objective.py): which random streams candidates of one study share.
# "episodes": the training episodes and their jitter come from the study's seed, the initial
# weights from the trial's; "all": the initial weights' seed too; "off": every trial draws its own.
CRN_MODES = ("episodes", "all", "off")
# How the race chooses its pick (search/race.py): "beats": a candidate replaces the baselines only
# when it beats every one of them with 95% confidence over the blocks, else the best baseline stays
# the pick; "mean": the survivor with the best mean.  Measured (results/README.md, section 6): of
# the four picks the mean rule made on a lead it could not tell from noise, three lost to Conv-4 on
# the test alphabets (-1.0, -2.1, -13.8 points) and one won (+2.4).
RACE_RULES = ("beats", "mean")
# Mixed precision (--amp): "on" autocasts every training (bf16 on a CPU with bf16 instructions and
# on CUDA from compute capability 8.0, fp16 below); "off" trains everything in fp32; "auto" trains
# *search candidates* in bf16 where the CPU has bf16 instructions and the space is one whose
# candidates it makes faster (BF16_SPACE_KINDS; ranked as fp32 ranks them: results/README.md), and
# final models (the race, export --retrain, evaluate) in fp32.
AMP_MODES = ("auto", "on", "off")
# What a study's candidates trained in, fixed when it starts (search.precision).
PRECISIONS = ("fp32", "bf16", "fp16")
# The space kinds whose candidates "auto" trains in bf16 on a bf16 CPU.  Measured on an AVX-512 BF16
# CPU (bench/throughput.py, bench/README.md): chains of convolutions train faster in bf16, cells of
# many small ops slower (the casts cost more than the smaller matmuls save).
BF16_SPACE_KINDS = ("chain",)
# What a study stored before a setting existed meant: studies resume as they started (a stored
# config without ``precision`` takes it from its ``amp``: study.stored_config).
LEGACY_SEARCH: dict[str, Any] = {"crn": "off", "race": 0, "race_rule": "mean"}


# The largest value accepted for each count a user gives (CLI option, config JSON): far past any
# few-shot run, so a value past it is a typo that would otherwise allocate or loop for hours.
MAX_COUNTS: dict[str, int] = {
    "ways": 1_000,
    "shots": 1_000,
    "queries": 1_000,
    "glyph_classes": 100_000,
    "glyph_samples": 1_000,
    "image_size": 1_024,
    "meta_batch": 1_024,
    "iterations": 10_000_000,
    "eval_every": 10_000_000,
    "val_episodes": 1_000_000,
    "test_episodes": 1_000_000,
    "inner_steps": 1_000,
    "test_inner_steps": 1_000,
    "train_ways": 1_000,
    "trials": 1_000_000,
    "prescreen_pool": 100_000,
    "supernet_steps": 10_000_000,
    "race": 1_000,
    "race_iterations": 10_000_000,
    "race_blocks": 1_000,
    "race_episodes": 1_000_000,
}


def check_count(name: str, value: Any, *, low: int = 1, flag: str | None = None) -> None:
    """ConfigError unless ``value`` is an integer from ``low`` to ``MAX_COUNTS[name]``."""
    flag = flag or f"--{name.replace('_', '-')}"
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer of at least {low}"
        if low == 0:
            kind = "a non-negative integer"
        raise ConfigError(f"{flag} must be {kind}, got {value!r}")
    high = MAX_COUNTS[name]
    if value > high:
        raise ConfigError(f"{flag} must be at most {high:,}, got {value:,}")


# Seeds reach numpy's and Optuna's generators (np.random.RandomState), which take 0..2**32-1 only;
# refused here, one line, rather than as a traceback from inside a sampler mid-run.
MAX_SEED = 2**32 - 1


def check_seed(value: Any, flag: str) -> None:
    """ConfigError unless ``value`` is an integer from 0 to ``MAX_SEED``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{flag} must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "glyphs"  # registered dataset name; glyphs needs no files and no network
    data_root: str | None = None  # where real datasets live (omniglot, folder, cifar_fs)
    ways: int = 5  # N classes per episode (5-way is the most reported Omniglot setting)
    shots: int = 1  # K labelled support examples per class
    # Query examples per class: 5, not the papers' 15 (MAML, ProtoNets on Omniglot): the score is a
    # little noisier per episode, but a candidate costs a third, so 8 fit in 15 CPU minutes.
    queries: int = 5
    image_size: int | None = None  # None = the dataset's own default (28 for characters)
    split: str = "lake"  # omniglot protocol: 'lake' (alphabets held out) or 'vinyals' (+rotations)
    download: bool = False  # fetch with torchvision when online; never implicit
    cache_dir: str | None = None  # preprocessed tensors; None = no cache (the CLI passes one)
    seed: int = 0  # the dataset's identity (glyph programs, seeded splits), not the run's seed
    glyph_classes: int = 600  # glyphs: characters in all (split 60/20/20 by alphabet)
    glyph_samples: int = 20  # glyphs: drawings per character, as in Omniglot
    within_alphabet: bool = False  # test episodes draw all their classes from one alphabet (Lake et al.)
    # Class augmentation: each training class's 90/180/270-degree rotations become new training
    # classes (Vinyals et al. 2016; Santoro et al. 2016).  Training split only: validation and
    # test classes stay the dataset's own, so scores compare across recipes.
    rotations: bool = False
    # Instance augmentation: a random affine jitter (shift, rotation, scale, shear) of every image of
    # a *training* episode, on the device, seeded from the run; never on validation or test episodes.
    augment: bool = False

    def episode_ways(self, task: str) -> int:
        """Classes per episode for ``task``: ``ways`` for classification, 1 for regression."""
        return self.ways if task == "classification" else 1

    def validate(self) -> None:
        for name in ("ways", "shots", "queries", "glyph_classes", "glyph_samples"):
            check_count(name, getattr(self, name))
        if self.image_size is not None:
            if not isinstance(self.image_size, int) or self.image_size < 4:
                raise ConfigError(f"--image-size must be an integer >= 4, got {self.image_size!r}")
            check_count("image_size", self.image_size, low=4)
        if self.ways < 2:
            raise ConfigError(f"--ways must be at least 2 for classification, got {self.ways}")
        for name in ("rotations", "augment", "within_alphabet", "download"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_seed(self.seed, "data seed")


@dataclass(frozen=True)
class LearnerConfig:
    algo: str = "maml"  # a name in learners.LEARNERS
    meta_batch: int = 4  # T episodes per outer step (MAML paper: 32 on Omniglot 5-way)
    iterations: int = 80  # outer steps per candidate (MAML paper: 60k; a CPU search affords far fewer)
    inner_steps: int = 1  # MAML SGD steps on the support set during meta-training
    inner_lr: float = 0.4  # MAML paper's Omniglot inner step size
    test_inner_steps: int = 3  # MAML steps at validation/meta-test (paper: 10)
    outer_lr: float = 1e-3  # Adam, as in both papers
    train_ways: int | None = None  # ProtoNet trains with more ways (paper: 60); None = ways
    grad_clip: float = 10.0  # max global grad norm; second-order MAML can spike early
    eval_every: int = 40  # outer steps between validation checkpoints (pruning sees these)
    val_episodes: int = 40  # episodes per validation checkpoint
    test_episodes: int = 600  # meta-test episodes (the papers' 600; CI = 1.96 std / sqrt(n))
    amp: str = "auto"  # one of AMP_MODES (stored configs and callers may still say true/false)
    compile: bool = False  # torch.compile the once-differentiated passes: pays only over long runs
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay of the outer optimizer; 0 = plain Adam
    lr_schedule: str = "constant"  # one of LR_SCHEDULES; cosine decays outer_lr to 0 over `iterations`
    # Which weights training ends with: the best validation checkpoint's, or the last step's.  The
    # search's score, evaluate and export --retrain all use these weights.  "last" by default: at
    # the recipe ablation's budgets the validation curve still rises, and "best" won nothing there.
    checkpoint: str = "last"
    # What a final model (export --retrain, evaluate) trains on: the training classes, or training
    # and validation classes for the step the validation curve chose.  Search candidates always
    # train on the training classes: their score is the validation classes'.
    refit: str = "train"

    def __post_init__(self) -> None:
        if isinstance(self.amp, bool):  # configs stored before AMP_MODES, and --amp as a switch
            object.__setattr__(self, "amp", "on" if self.amp else "off")

    def budget(self, iterations: int | None = None, meta_batch: int | None = None) -> dict[str, Any]:
        """The fields of another budget: ``iterations`` outer steps with as many validation
        checkpoints as this config has (``eval_every`` scaled), ``meta_batch`` episodes per step;
        None keeps this config's value."""
        fields: dict[str, Any] = {}
        if iterations is not None:
            check_count("iterations", iterations)
            fields["iterations"] = iterations
            fields["eval_every"] = max(1, iterations * self.eval_every // self.iterations)
        if meta_batch is not None:
            fields["meta_batch"] = meta_batch
        return fields

    def validate(self) -> None:
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown --amp {self.amp!r}; choose from {list(AMP_MODES)}")
        if not isinstance(self.algo, str) or not self.algo:
            raise ConfigError(f"algo must be a learner's name, got {self.algo!r}")
        for name in ("meta_batch", "iterations", "eval_every", "val_episodes", "test_episodes"):
            check_count(name, getattr(self, name), flag=name)
        for name in ("inner_steps", "test_inner_steps"):
            check_count(name, getattr(self, name), low=0, flag=name)
        for name in ("inner_lr", "outer_lr", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.train_ways is not None:
            check_count("train_ways", self.train_ways, low=2)
        wd = self.weight_decay
        if not isinstance(wd, (int, float)) or isinstance(wd, bool) or not 0 <= wd < float("inf"):
            raise ConfigError(f"--weight-decay must be a number >= 0, got {wd!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; choose from {list(LR_SCHEDULES)}")
        if self.checkpoint not in CHECKPOINTS:
            raise ConfigError(f"unknown checkpoint {self.checkpoint!r}; choose from {list(CHECKPOINTS)}")
        if self.refit not in REFITS:
            raise ConfigError(f"unknown refit {self.refit!r}; choose from {list(REFITS)}")


@dataclass(frozen=True)
class SearchConfig:
    space: str = "cell"  # a name in search_spaces/ or a path to a YAML file
    sampler: str = "tpe"  # a name in search.samplers.SAMPLERS
    trials: int = 8  # candidates to evaluate in this run (a resumed study adds up to this total)
    pruner: str = "none"  # a name in search.samplers.PRUNERS; multi-fidelity via the validation checkpoints
    study: str | None = None  # None = derived from space, algo and dataset
    storage: str | None = None  # an Optuna storage URL; None = SQLite under results/<study>/
    trial_timeout: float | None = None  # seconds of meta-training before a candidate is failed
    # Known architectures trained first, each an arch JSON path or a one-point space (conv4):
    # the search then reports how far the found ones beat them.
    enqueue: tuple[str, ...] = ()
    # Screening: per meta-trained candidate, draw ``prescreen_pool`` from the sampler, score each by
    # the training-free proxy ``prescreen`` (search/proxies.py) and meta-train only the best.  The
    # others stay in the study as pruned trials with their proxy score.  None = no screening.
    prescreen: str | None = None
    prescreen_pool: int = 1
    # Weight sharing (search/supernet.py): with "supernet", a supernet of the space is meta-trained
    # for ``supernet_steps`` first and ``prescreen`` is "supernet" (inherited-weight scores); with
    # "darts", the relaxed cell network is, and its discretised architecture is the first trial.
    strategy: str = "scratch"
    supernet_steps: int = DEFAULT_SUPERNET_STEPS
    # Candidates are compared on common random numbers (one of CRN_MODES): score differences
    # between candidates then come from the architectures, not from their training streams.
    crn: str = "episodes"
    # The final race (search/race.py): the ``race`` best candidates by search score and the
    # ``baselines`` are meta-trained again for ``race_iterations`` steps (None: RACE_STEPS_FACTOR
    # times the candidates'), once per block with the block's own training seed, and scored on
    # ``race_episodes`` fresh validation episodes per block (None: twice ``val_episodes``); after
    # each block an entrant behind the leader with 95% confidence is dropped.  0 = no race.
    # ``race_rule`` (one of RACE_RULES) chooses the pick among the survivors.
    race: int = 2
    race_iterations: int | None = None
    race_blocks: int = 2
    race_episodes: int | None = None
    race_rule: str = "beats"
    # Known architectures the pick must beat (one-architecture spaces or arch JSON paths), raced
    # without using up ``trials``; None: conv4 for images, mlp40 for vectors.  Without a race they
    # are trained first as trials, and the search reports the gap.
    baselines: tuple[str, ...] | None = None
    # The precision the study's candidates train in (one of PRECISIONS), fixed when the study
    # starts from --amp and this machine (search.runner.candidate_precision) and kept on resume:
    # a study that mixed precisions would compare its candidates on another footing.  None until then.
    precision: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "enqueue", tuple(self.enqueue))  # JSON gives a list
        if self.baselines is not None:
            object.__setattr__(self, "baselines", tuple(self.baselines))

    def validate(self) -> None:
        for name in ("sampler", "pruner"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a name, got {getattr(self, name)!r}")
        check_count("trials", self.trials)
        pool = self.prescreen_pool
        check_count("prescreen_pool", pool)
        if self.prescreen is None and pool > 1:
            raise ConfigError(f"--prescreen-pool {pool} needs --prescreen PROXY (the score that picks from the pool)")
        if self.prescreen is not None and pool < 2:
            raise ConfigError(f"--prescreen {self.prescreen!r} needs --prescreen-pool of at least 2, got {pool}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown --strategy {self.strategy!r}; choose from {list(STRATEGIES)}")
        check_count("supernet_steps", self.supernet_steps)
        if self.strategy == "supernet" and self.prescreen != "supernet":
            raise ConfigError(
                f"--strategy supernet scores candidates by their inherited weights; drop --prescreen {self.prescreen!r}"
            )
        if self.strategy == "darts" and self.prescreen is not None:
            raise ConfigError(f"--strategy darts derives one architecture; drop --prescreen {self.prescreen!r}")
        if self.prescreen == "supernet" and self.strategy != "supernet":
            raise ConfigError("--prescreen supernet needs a trained supernet: use --strategy supernet")
        if self.crn not in CRN_MODES:
            raise ConfigError(f"unknown --crn {self.crn!r}; choose from {list(CRN_MODES)}")
        if self.race_rule not in RACE_RULES:
            raise ConfigError(f"unknown --race-rule {self.race_rule!r}; choose from {list(RACE_RULES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose from {list(PRECISIONS)}")
        check_count("race", self.race, low=0)
        check_count("race_blocks", self.race_blocks)
        for name in ("race_iterations", "race_episodes"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name))
        if self.race and self.sampler == "nsga2":
            raise ConfigError(
                f"--race {self.race} picks one architecture; --sampler nsga2 returns a Pareto front: use --race 0"
            )
        if self.trial_timeout is not None and not (
            isinstance(self.trial_timeout, (int, float)) and 0 < self.trial_timeout < float("inf")
        ):
            raise ConfigError(f"--trial-timeout must be a positive number of seconds, got {self.trial_timeout!r}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    preset: str = "quick"  # the preset the values above started from
    device: str = "auto"  # auto = CUDA when present, else CPU
    results_dir: str = "results"  # one folder per study below it
    seed: int = 0  # sampler, episode draws and initial weights all derive from it

    def validate(self) -> RunConfig:
        self.data.validate()
        self.learner.validate()
        self.search.validate()
        if not is_device_name(self.device):
            raise ConfigError(f"unknown device {self.device!r}; choose from {list(DEVICES)} or cuda:N")
        check_seed(self.seed, "--seed")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def recipe(self) -> dict[str, Any]:
        """The training recipe: what, beyond the budget, decides how a backbone is meta-trained."""
        d, lr = self.data, self.learner
        return {
            "rotations": d.rotations,
            "augment": d.augment,
            "train_ways": lr.train_ways or d.ways,
            "weight_decay": lr.weight_decay,
            "lr_schedule": lr.lr_schedule,
            "checkpoint": lr.checkpoint,
            "refit": lr.refit,
        }

    def race_iterations(self) -> int:
        """Meta-training steps of each race entrant per block: ``search.race_iterations``, or
        RACE_STEPS_FACTOR times the candidates'."""
        return self.search.race_iterations or RACE_STEPS_FACTOR * self.learner.iterations

    def race_episodes(self) -> int:
        """Validation episodes per race block: ``search.race_episodes``, or twice a candidate's."""
        return self.search.race_episodes or 2 * self.learner.val_episodes

    def with_recipe(self, recipe: dict[str, Any] | None) -> RunConfig:
        """The config a candidate trains under: the run's, with the training choices its space
        drew for it (``arch.graph["recipe"]``) in place of the run's values."""
        if not recipe:
            return self
        sections: dict[str, dict[str, Any]] = {}
        for key, value in recipe.items():
            if key not in RECIPE_FIELDS:
                raise ConfigError(f"unknown recipe key {key!r}; choose from {sorted(RECIPE_FIELDS)}")
            sections.setdefault(RECIPE_FIELDS[key], {})[key] = value
        return self.replace(**sections).validate()

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunConfig:
        try:
            return cls(
                data=_build(DataConfig, doc.get("data", {})),
                learner=_build(LearnerConfig, doc.get("learner", {})),
                search=_build(SearchConfig, doc.get("search", {})),
                **{k: v for k, v in doc.items() if k not in ("data", "learner", "search")},
            )
        except TypeError as exc:
            raise ConfigError(f"bad run config: {exc}") from None

    def replace(self, **sections: Any) -> RunConfig:
        """Copy with some fields of some sections changed: ``cfg.replace(data={"ways": 20})``."""
        top = {k: v for k, v in sections.items() if k not in ("data", "learner", "search")}
        return dataclasses.replace(
            self,
            data=_update(self.data, sections.get("data")),
            learner=_update(self.learner, sections.get("learner")),
            search=_update(self.search, sections.get("search")),
            **top,
        )


def _build(kind: type, values: dict[str, Any]):
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {kind.__name__} field(s) {unknown}; choose from {sorted(names)}")
    return kind(**values)


def _update(section, values: dict[str, Any] | None):
    if not values:
        return section
    _build(type(section), values)  # refuse unknown names with the valid ones listed
    return dataclasses.replace(section, **values)


# The count fields of the sections that set how much work a run does, by kind: "steps" are the
# outer steps a network trains (a candidate, the supernet or DARTS network, a race entrant), "work"
# is the rest (episodes, trials, pools, the dataset's size, the validation cadence).  A preset sets
# every budget it scales: one it leaves unset keeps quick's value (as `smoke` once meta-trained a
# 500-step supernet for candidates of 6 steps).  The rule, with a preset's scale its candidates'
# iterations over quick's: a smaller preset lowers every budget (or leaves it at its floor), its
# "steps" to at most what its scale implies, and smoke's to at most a candidate's; a larger preset
# lowers none and takes its "steps" at least to its scale.  tests/test_config.py checks it for each
# preset, and that every count field of the sections is here or in PROTOCOL_COUNTS.
BUDGET_FIELDS: dict[str, dict[str, str]] = {
    "data": {"queries": "work", "glyph_classes": "work", "glyph_samples": "work"},
    "learner": {
        "meta_batch": "work",
        "iterations": "steps",
        "eval_every": "work",
        "val_episodes": "work",
        "test_episodes": "work",
        "test_inner_steps": "work",
    },
    "search": {
        "trials": "work",
        "prescreen_pool": "work",
        "supernet_steps": "steps",
        "race": "work",
        "race_iterations": "steps",  # None: RACE_STEPS_FACTOR times the candidates' (scales with them)
        "race_blocks": "work",
        "race_episodes": "work",  # None: twice the candidates' validation episodes (scales with them)
    },
}
# The least value of a budget that still does its job, where that is not 1: no race at all; a race
# drops an entrant from its second block on; a pool of 1 is no screening (--prescreen sets a pool).
BUDGET_FLOORS: dict[str, int] = {"race": 0, "race_blocks": 2, "prescreen_pool": 1}
# Count fields that are the task or the learner, not an amount of work: presets leave them alone.
PROTOCOL_COUNTS: dict[str, tuple[str, ...]] = {
    "data": ("ways", "shots", "image_size", "seed"),
    "learner": ("inner_steps", "train_ways"),
    "search": (),
}


# Presets scale the budget (BUDGET_FIELDS), not the protocol: ways/shots stay the user's.
# smoke: seconds, for tests.  quick: the default, a 2-core CPU in minutes.
# paper: the published protocols (Finn et al. 2017; Snell et al. 2017), for a GPU.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "data": {"glyph_classes": 60, "glyph_samples": 8, "queries": 3},
        "learner": {
            "meta_batch": 2,
            "iterations": 6,
            "eval_every": 3,
            "val_episodes": 8,
            "test_episodes": 20,
            "test_inner_steps": 1,
        },
        # Tests run a race only where they test it: a race can pick the baseline over every trial.
        # A step of the supernet or of the DARTS network costs many candidates' steps (it runs
        # every op of the space): two keep a smoke search with --strategy darts in seconds.
        "search": {"trials": 2, "race": 0, "supernet_steps": 2},
    },
    "quick": {},  # the dataclass defaults: one truth for `RunConfig()` and the default preset
    "paper": {
        "data": {"glyph_classes": 1200},
        "learner": {
            "meta_batch": 32,
            "iterations": 60_000,
            "inner_steps": 1,
            "inner_lr": 0.4,
            "test_inner_steps": 10,
            "eval_every": 2_000,
            "val_episodes": 600,
            "test_episodes": 600,
        },
        # The supernet or DARTS network: quick's DEFAULT_SUPERNET_STEPS per 80 candidate steps.
        "search": {"trials": 100, "supernet_steps": 375_000},
    },
}

# ProtoNets train with more ways than they test with (Snell et al.: 60-way for Omniglot 1-shot).
PAPER_PROTONET_TRAIN_WAYS = 60


# A space's recipe keys (spaces/base.py RECIPE_KEYS) -> the config section each sets.
RECIPE_FIELDS = {
    "outer_lr": "learner",
    "weight_decay": "learner",
    "lr_schedule": "learner",
    "augment": "data",
    "train_ways": "learner",
    "inner_lr": "learner",
    "inner_steps": "learner",
}


# Per-dataset protocol values, applied after the preset and before the user's own values.
# Sinusoid: Finn et al. (2017, section 5.1) used an inner step size of 0.01; Omniglot's 0.4
# makes the regression diverge.
# Omniglot: rotated training classes and affine jitter won at equal CPU time in every ProtoNet
# row of the recipe ablation, both seeds (bench/recipe.py; results/README.md); neither costs a
# training step.  (Its FOMAML rows disagreed between seeds.)
DATASET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # The race is on by default for image datasets only.
    "sinusoid": {"learner": {"inner_lr": 0.01}, "search": {"race": 0}},
    "omniglot": {"data": {"rotations": True, "augment": True}},
}


def make_config(
    preset: str = "quick", *, budget: dict[str, int | None] | None = None, **sections: dict[str, Any]
) -> RunConfig:
    """The preset's values, then the dataset's protocol values, then the caller's; validated.

    ``make_config("smoke", learner={"algo": "protonet"}, search={"trials": 3})``

    ``budget`` (``{"iterations": N, "meta_batch": M}``, None values ignored: the CLI's
    --iterations / --meta-batch) changes the preset's budget keeping its number of validation
    checkpoints (:meth:`LearnerConfig.budget`); a ``learner`` section's own values still win.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    base = RunConfig(preset=preset).replace(**PRESETS[preset])
    algo = (sections.get("learner") or {}).get("algo", base.learner.algo)
    if preset == "paper" and algo == "protonet":
        base = base.replace(learner={"train_ways": PAPER_PROTONET_TRAIN_WAYS})
    dataset = (sections.get("data") or {}).get("dataset", base.data.dataset)
    base = base.replace(**DATASET_DEFAULTS.get(dataset, {}))
    if budget:
        base = base.replace(learner=base.learner.budget(**budget))
    return base.replace(**sections).validate()
