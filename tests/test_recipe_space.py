"""A space's training choices (its ``recipe:`` block): drawn like the graph's, reaching the trainer,
the card, the retraining and the fingerprint; a bad block is one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nas_meta import graph
from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.errors import SpaceError
from nas_meta.learners import train as train_module
from nas_meta.record import Attr
from nas_meta.search.runner import run_search
from nas_meta.spaces import load_space

CHAIN = "kind: chain\ndepth: 2\nwidth: [8, 16]\nkernel: 3\npool: max\nskip: false\nnorm: batch\n"


def write_space(tmp_path: Path, recipe: str, name: str = "r") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(CHAIN + "recipe:\n" + recipe)
    return path


@pytest.fixture
def learning_rates(monkeypatch):
    """The learning rate of every optimizer the trainer makes, in order."""
    seen = []
    real = train_module.make_optimizer

    def recording(learner, cfg, **kw):
        optimizer = real(learner, cfg, **kw)
        seen.append(optimizer.param_groups[0]["lr"])
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", recording)
    return seen


def search(tmp_path, space, algo="protonet", **kw):
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        learner={"algo": algo},
        search={"space": str(space), "study": "r", "sampler": "random", **kw},
        results_dir=str(tmp_path / "results"),
    )
    return cfg, run_search(cfg, stream=io.StringIO())


def test_a_planted_learning_rate_reaches_the_optimizer(tmp_path, learning_rates):
    space = write_space(tmp_path, "  outer_lr: [0.000123, 0.0456]\n")
    _, outcome = search(tmp_path, space, trials=4)
    drawn = [t.params["recipe:outer_lr"] for t in outcome.study.trials if Attr.DUPLICATE_OF not in t.user_attrs]
    assert set(drawn) == {0.000123, 0.0456}  # both drawn over four trials (seeded)
    assert learning_rates == drawn  # each candidate's optimizer got its own drawn rate
    for t in outcome.study.trials:
        assert graph.from_json(t.user_attrs[Attr.ARCH]).graph["recipe"] == {"outer_lr": t.params["recipe:outer_lr"]}


def test_the_same_graph_under_another_recipe_is_another_candidate(tmp_path, learning_rates):
    space = write_space(tmp_path, "  outer_lr: [0.000123, 0.0456]\n")
    cfg, outcome = search(tmp_path, space, trials=1)
    first = outcome.study.trials[0]
    other = {**first.params, "recipe:outer_lr": 0.0456 if first.params["recipe:outer_lr"] == 0.000123 else 0.000123}
    outcome.study.enqueue_trial(other)
    outcome.study.enqueue_trial(first.params)  # the very same candidate: a duplicate
    again = run_search(cfg.replace(search={"trials": 3}), stream=io.StringIO())
    second, third = again.study.trials[1], again.study.trials[2]
    assert Attr.DUPLICATE_OF not in second.user_attrs  # trained: its graph is the first's, its recipe is not
    assert second.user_attrs[Attr.FINGERPRINT] != first.user_attrs[Attr.FINGERPRINT]
    assert third.user_attrs[Attr.DUPLICATE_OF] == first.number  # not trained, not counted
    assert learning_rates[:2] == [first.params["recipe:outer_lr"], other["recipe:outer_lr"]]


def test_a_choice_that_does_not_apply_to_the_learner_is_not_drawn_and_the_card_says_so(tmp_path, capsys):
    space = write_space(tmp_path, "  inner_steps: [1, 2]\n  augment: [true, false]\n")
    _, outcome = search(tmp_path, space, trials=2)
    for t in outcome.study.trials:
        assert "recipe:inner_steps" not in t.params and "recipe:augment" in t.params
    out = tmp_path / "export"
    args = ["export", "--study", "r", "--results-dir", str(tmp_path / "results"), "--out", str(out)]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    card = json.loads((out / "rank1" / "card.json").read_text())
    assert card["recipe_not_drawn"] == ["inner_steps"]
    assert card["searched_recipe"] == {"augment": card["recipe"]["augment"]}


def test_export_retrain_trains_with_the_candidates_recipe(tmp_path, learning_rates):
    space = write_space(tmp_path, "  outer_lr: [0.000123, 0.0456]\n  train_ways: [3, 4]\n")
    _, outcome = search(tmp_path, space, trials=1)
    trial = outcome.study.trials[0]
    learning_rates.clear()
    out = tmp_path / "export"
    args = ["export", "--study", "r", "--results-dir", str(tmp_path / "results"), "--out", str(out), "--retrain"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    assert learning_rates == [trial.params["recipe:outer_lr"]]
    card = json.loads((out / "rank1" / "card.json").read_text())
    assert card["recipe"]["train_ways"] == trial.params["recipe:train_ways"]
    assert card["searched_recipe"] == {
        k.partition(":")[2]: v for k, v in trial.params.items() if k.startswith("recipe:")
    }
    # arch.json keeps the recipe: evaluate and nas_meta.load read the same candidate back.
    assert graph.load_json(out / "rank1" / "arch.json").graph["recipe"] == card["searched_recipe"]


def test_from_params_gives_the_recipe_back_and_the_fingerprint_covers_it(tmp_path):
    space = load_space(write_space(tmp_path, "  outer_lr: [0.001, 0.003]\n  inner_lr: [0.1, 0.4]\n"))
    arch = space.draw(lambda name, options: options[-1], "maml")
    assert arch.graph["recipe"] == {"outer_lr": 0.003, "inner_lr": 0.4}
    again = space.from_params(arch.graph["params"], algo="maml")
    assert graph.fingerprint(again) == graph.fingerprint(arch)
    plain = space.build(lambda name, options: options[-1])
    assert graph.fingerprint(plain) != graph.fingerprint(arch)
    assert space.candidates("maml") == space.size() * 4 and space.candidates("protonet") == space.size() * 2
    assert graph.fingerprint(graph.from_json(json.loads(json.dumps(graph.to_json(arch))))) == graph.fingerprint(arch)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("  learning_rate: [0.1]\n", "key 'recipe.learning_rate' is not a training choice; choose from"),
        ("  outer_lr: [0.001, 5]\n", "key 'outer_lr' must be a learning rate in (0, 1] or a list of them, got 5"),
        ("  augment: [yes please]\n", "key 'augment' must be true or false or a list of them"),
        ("  train_ways: [1, 5]\n", "key 'train_ways' must be a number of classes from 2 to 1,000"),
        ("  inner_steps: []\n", "key 'inner_steps' must be a number of inner steps"),
        ("  - outer_lr\n", "key 'recipe' must be a mapping of training choices, got list"),
    ],
)
def test_a_bad_recipe_block_is_one_line(tmp_path, capsys, block, message):
    space = write_space(tmp_path, block)
    with pytest.raises(SpaceError, match=None) as info:
        load_space(space)
    assert message in str(info.value)
    args = ["search", "--space", str(space), "--preset", "smoke", "--results-dir", str(tmp_path / "results")]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_the_shipped_recipe_space_loads_and_draws_per_learner():
    space = load_space("chain_recipe")
    assert set(space.recipe_choices("protonet")) == {"outer_lr", "weight_decay", "augment", "train_ways"}
    assert set(space.recipe_choices("maml")) == {"outer_lr", "weight_decay", "augment", "inner_lr", "inner_steps"}
    assert space.recipe_skipped("protonet") == ["inner_lr", "inner_steps"]
