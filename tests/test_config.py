"""Config dataclasses, presets and the registry."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from nas_meta.config import BUDGET_FIELDS, BUDGET_FLOORS, PRESETS, PROTOCOL_COUNTS, RunConfig, make_config
from nas_meta.errors import ConfigError
from nas_meta.registry import Registry


def test_json_round_trip_is_exact():
    cfg = make_config("smoke", data={"ways": 3}, learner={"algo": "protonet"}, search={"space": "chain"})
    doc = json.loads(json.dumps(cfg.to_dict()))
    assert RunConfig.from_dict(doc) == cfg


def test_preset_values_then_user_values():
    cfg = make_config("smoke", search={"trials": 5})
    assert cfg.learner.iterations == PRESETS["smoke"]["learner"]["iterations"]
    assert cfg.search.trials == 5
    assert cfg.preset == "smoke"


def test_paper_preset_is_the_published_protocol():
    maml = make_config("paper")
    assert (maml.learner.meta_batch, maml.learner.inner_lr, maml.learner.iterations) == (32, 0.4, 60_000)
    assert maml.learner.test_inner_steps == 10
    assert make_config("paper", learner={"algo": "protonet"}).learner.train_ways == 60


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"data": {"ways": 0}}, "--ways must be a positive integer, got 0"),
        ({"data": {"shots": -1}}, "--shots must be a positive integer, got -1"),
        ({"data": {"ways": 1}}, "--ways must be at least 2"),
        ({"learner": {"algo": ""}}, "algo must be a learner's name"),
        ({"search": {"sampler": 3}}, "sampler must be a name, got 3"),
        ({"search": {"trials": 0}}, "--trials must be a positive integer, got 0"),
        ({"data": {"wayz": 5}}, "unknown DataConfig field(s) ['wayz']"),
        ({"device": "tpu"}, "unknown device 'tpu'; choose from ['auto', 'cpu', 'cuda']"),
    ],
)
def test_bad_values_name_the_value_and_the_choices(sections, message):
    with pytest.raises(ConfigError) as info:
        make_config("smoke", **sections)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match=r"unknown preset 'fast'; choose from \['paper', 'quick', 'smoke'\]"):
        make_config("fast")


def test_registry_refuses_duplicates_and_lists_choices():
    reg: Registry = Registry("learner")
    reg.register("maml")(object)
    reg.register("protonet")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("maml")(object)
    with pytest.raises(ConfigError, match=r"unknown learner 'mamll'; choose from \['maml', 'protonet'\]"):
        reg.get("mamll")
    assert reg.names() == ["maml", "protonet"] and "maml" in reg and len(reg) == 2


def test_the_dataclass_defaults_are_the_quick_preset():
    assert make_config("quick") == RunConfig().validate()
    assert make_config() == RunConfig()


def test_the_top_level_names_resolve():
    import nas_meta
    from nas_meta.export import load
    from nas_meta.model.network import build
    from nas_meta.spaces import load_space

    assert (nas_meta.build, nas_meta.load, nas_meta.load_space) == (build, load, load_space)


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5])
def test_seeds_outside_what_numpy_and_torch_take_are_refused(seed):
    with pytest.raises(ConfigError, match=r"^--seed must be an integer from 0 to 4294967295 \(2\*\*32 - 1\), got "):
        make_config("smoke", seed=seed)
    with pytest.raises(ConfigError, match=r"^data seed must be an integer from 0 to 4294967295"):
        make_config("smoke", data={"seed": seed})


def test_the_seed_range_ends_are_accepted_and_workers_past_it_wrap(tmp_path):
    from nas_meta.config import MAX_SEED
    from nas_meta.search.study import create_study, load_study

    assert make_config("smoke", seed=0, data={"seed": MAX_SEED}).data.seed == MAX_SEED
    cfg = make_config("smoke", search={"space": "chain", "study": "edge"}, seed=MAX_SEED, results_dir=str(tmp_path))
    (tmp_path / "edge").mkdir()
    create_study(cfg, "edge", "classification")
    url = f"sqlite:///{tmp_path}/edge/study.db"
    # Worker 1's sampler seed, MAX_SEED + 1, wraps to 0 instead of failing inside Optuna's sampler.
    first = load_study("edge", url, worker_index=1).sampler._rng.rng.randint(0, 2**31)
    wrapped = make_config("smoke", search={"space": "chain", "study": "zero"}, seed=0, results_dir=str(tmp_path))
    (tmp_path / "zero").mkdir()
    create_study(wrapped, "zero", "classification")
    zero = load_study("zero", f"sqlite:///{tmp_path}/zero/study.db", worker_index=0).sampler._rng.rng.randint(0, 2**31)
    assert first == zero


SECTIONS = ("data", "learner", "search")


def _budget(cfg: RunConfig, section: str, name: str) -> int:
    """The value a run uses: the race's None budgets are derived from the candidates'."""
    derived = {"race_iterations": cfg.race_iterations, "race_episodes": cfg.race_episodes}
    if section == "search" and name in derived:
        return derived[name]()
    return getattr(getattr(cfg, section), name)


def test_every_count_field_is_a_budget_or_protocol():
    for section in SECTIONS:
        kind = type(getattr(RunConfig(), section))
        counts = {f.name for f in dataclasses.fields(kind) if str(f.type).split(" ")[0] == "int"}
        budgets, protocol = set(BUDGET_FIELDS[section]), set(PROTOCOL_COUNTS[section])
        assert not budgets & protocol, section
        # A new count field must say which it is: a budget is then held to every preset's scale.
        assert counts == budgets | protocol, f"{section}: classify {sorted(counts ^ (budgets | protocol))}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_scales_every_budget(preset):
    quick, cfg = make_config("quick"), make_config(preset)
    scale = cfg.learner.iterations / quick.learner.iterations
    for section in SECTIONS:
        for name, kind in BUDGET_FIELDS[section].items():
            value, base = _budget(cfg, section, name), _budget(quick, section, name)
            where = f"{preset}: {section}.{name} = {value} (quick: {base}, scale {scale:g})"
            if scale < 1:
                assert value < base or value == BUDGET_FLOORS.get(name, 1), where
                if kind == "steps":
                    assert value <= math.ceil(base * scale), where
                if preset == "smoke" and kind == "steps":  # seconds: no network trains longer than a candidate
                    assert value <= cfg.learner.iterations, where
            elif scale > 1:
                assert value >= base, where
                if kind == "steps":
                    assert value >= math.floor(base * scale), where
            else:
                assert value == base, where


@pytest.mark.parametrize("strategy, prescreen", [("supernet", None), ("scratch", "params")])
def test_the_screening_pool_scales_with_the_preset(strategy, prescreen):
    from nas_meta.cli import build_parser
    from nas_meta.cli.search import search_config
    from nas_meta.config import SCREENING_POOLS

    kind = "supernet" if strategy == "supernet" else "prescreen"
    pools = {}
    for preset in PRESETS:
        argv = ["search", "--preset", preset, "--strategy", strategy]
        argv += ["--prescreen", prescreen] if prescreen else []
        pools[preset] = search_config(build_parser().parse_args(argv)).search.prescreen_pool
        assert pools[preset] == SCREENING_POOLS[preset][kind]
    # smoke screens fewer candidates per trial than quick, in proportion to its shorter candidates
    quick, smoke = make_config("quick").learner.iterations, make_config("smoke").learner.iterations
    assert 1 < pools["smoke"] <= max(2, pools["quick"] * smoke // quick * 4)
    assert pools["smoke"] < pools["quick"] <= pools["paper"]


def test_a_budget_keeps_the_presets_number_of_checkpoints():
    quick, paper = make_config("quick").learner, make_config("paper").learner
    cfg = make_config("quick", budget={"iterations": 800, "meta_batch": None})
    assert (cfg.learner.iterations, cfg.learner.eval_every) == (800, 800 * quick.eval_every // quick.iterations)
    assert cfg.learner.meta_batch == quick.meta_batch  # None: the preset's
    cfg = make_config("paper", budget={"iterations": 6_000, "meta_batch": 8})
    assert cfg.learner.eval_every == 6_000 * paper.eval_every // paper.iterations
    assert cfg.learner.meta_batch == 8
    # At least one step between checkpoints; the caller's own learner values still win.
    assert make_config("quick", budget={"iterations": 1}).learner.eval_every == 1
    assert make_config("quick", budget={"iterations": 800}, learner={"eval_every": 7}).learner.eval_every == 7
    with pytest.raises(ConfigError, match="--iterations must be a positive integer, got 0"):
        make_config("quick", budget={"iterations": 0})
    # The CLI passes what the user typed.
    from nas_meta.cli import build_parser
    from nas_meta.cli.search import search_config

    args = build_parser().parse_args(["search", "--preset", "smoke", "--iterations", "12", "--cache-dir", "c"])
    smoke = make_config("smoke").learner
    assert search_config(args).learner.eval_every == 12 * smoke.eval_every // smoke.iterations
