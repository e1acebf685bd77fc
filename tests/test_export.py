"""Export, load and evaluate: from a finished search to a model a user can load."""

from __future__ import annotations

import io
import json

import pytest
import torch

import nas_meta
from nas_meta import graph
from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.errors import DataError
from nas_meta.export import select_trials
from nas_meta.retrain import load_weights, retrain, save_weights
from nas_meta.search.runner import run_search

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(root / "cache")},
        search={"space": "chain", "study": "e", "trials": 3},
        results_dir=str(root / "results"),
    )
    outcome = run_search(cfg, stream=io.StringIO())
    return root, cfg, outcome


def test_export_top_k_writes_every_file_with_the_trial_numbers(searched, capsys):
    root, cfg, outcome = searched
    out = root / "top2"
    assert (
        main(
            [
                "export",
                "--study",
                "e",
                "--results-dir",
                str(root / "results"),
                "--top",
                "2",
                "--out",
                str(out),
                "--cache-dir",
                str(root / "cache"),
            ]
        )
        == 0
    )
    best = select_trials(outcome.study, "classification", top=2)
    for rank, trial in enumerate(best, start=1):
        folder = out / f"rank{rank}"
        card = json.loads((folder / "card.json").read_text())
        assert card["trial"] == trial.number
        assert card["params"] == trial.user_attrs["params"]
        assert card["search_score"]["value"] == pytest.approx(trial.values[0])
        assert card["input"]["shape"] == [1, 28, 28] and "ink high" in card["input"]["polarity"]
        arch = graph.load_json(folder / "arch.json")
        assert graph.fingerprint(arch) == trial.user_attrs["fingerprint"]
        assert (folder / "arch.graphml").read_text().startswith("<?xml")
        assert (folder / "arch.png").read_bytes()[:8] == PNG
        assert f"trial #{trial.number}" in (folder / "README.md").read_text()
        backbone = nas_meta.load(folder)  # no weights: a freshly initialised backbone
        assert backbone(torch.rand(4, 1, 28, 28)).shape == (4, card["feature_dim"])
    assert "rank 2: trial #" in capsys.readouterr().out


def test_retrained_weights_round_trip_through_load(searched, tmp_path):
    _, cfg, outcome = searched
    arch = graph.from_json(select_trials(outcome.study, "classification")[0].user_attrs["arch"])
    learner, result = retrain(cfg, arch)
    test = result["test"]
    assert 0.0 <= test["mean"] <= 1.0 and test["ci95"] >= 0.0 and test["episodes"] == cfg.learner.test_episodes
    folder = tmp_path / "model"
    folder.mkdir()
    graph.save_json(arch, folder / "arch.json")
    (folder / "card.json").write_text(json.dumps({"input": {"shape": [1, 28, 28]}}))
    save_weights(learner, folder / "weights.pt")
    loaded = nas_meta.load(folder)
    x = torch.rand(10, 1, 28, 28)
    learner.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), learner.backbone(x))
    state = load_weights(folder / "weights.pt")
    assert set(state) == {"backbone", "head"}  # MAML's meta-learned head is kept for evaluate


def test_export_retrain_and_evaluate_with_weights(searched, capsys):
    root, cfg, _ = searched
    out = root / "retrained"
    args = [
        "export",
        "--study",
        "e",
        "--results-dir",
        str(root / "results"),
        "--retrain",
        "--out",
        str(out),
        "--cache-dir",
        str(root / "cache"),
    ]
    assert main(args) == 0
    card = json.loads((out / "rank1" / "card.json").read_text())
    test = card["retrain"]["test"]
    assert test["episodes"] == cfg.learner.test_episodes
    assert f"test accuracy {100 * test['mean']:.2f}%" in capsys.readouterr().out

    # evaluate with the exported weights on the same test episodes gives the same number
    assert (
        main(
            [
                "evaluate",
                str(out / "rank1"),
                "--weights",
                str(out / "rank1" / "weights.pt"),
                "--preset",
                "smoke",
                "--cache-dir",
                str(root / "cache"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"accuracy {100 * test['mean']:.2f}% ± {100 * test['ci95']:.2f}" in printed


def test_damaged_weights_are_a_clear_error(tmp_path, searched, capsys):
    root, _, _ = searched
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="cannot read weights .*weights.pt"):
        load_weights(bad)
    # An exported folder of its own (this test does not lean on another test's output).
    out = tmp_path / "exported"
    assert main(["export", "--study", "e", "--results-dir", str(root / "results"), "--out", str(out)]) == 0
    capsys.readouterr()
    code = main(
        ["evaluate", str(out / "rank1"), "--weights", str(bad), "--preset", "smoke", "--cache-dir", str(root / "cache")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "weights.pt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_export_of_a_missing_study_is_one_line(tmp_path, capsys):
    assert main(["export", "--study", "nope", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"nas-meta: error: no study 'nope' in '{tmp_path}'; studies there: []"


def test_evaluate_a_space_by_name_with_a_budget_saves_weights_that_evaluate_again(tmp_path, capsys):
    """`evaluate conv4 --iterations N --save-weights W`, then `--weights W`: the same test number."""
    weights = tmp_path / "conv4.pt"
    common = ["--preset", "smoke", "--algo", "protonet", "--cache-dir", str(tmp_path / "cache")]
    assert main(["evaluate", "conv4", "--iterations", "4", "--save-weights", str(weights), *common]) == 0
    captured = capsys.readouterr()
    assert "smoke budget, 4 steps" in captured.err and "step 4/4" in captured.err
    first = captured.out.strip().splitlines()[-1]
    assert "trained in" in first and weights.is_file()
    assert main(["evaluate", "conv4", "--weights", str(weights), *common]) == 0
    again = capsys.readouterr().out.strip().splitlines()[-1]
    assert again == first.split(", trained in")[0]
    # within-alphabet test episodes (glyph classes are alphabetNN/characterNNNN) score differently
    assert main(["evaluate", "conv4", "--weights", str(weights), "--within-alphabet", *common]) == 0
    within = capsys.readouterr().out.strip().splitlines()[-1]
    assert "within alphabets" in within and within.split(": ")[-1] != again.split(": ")[-1]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["cell"], "'cell' is a space of"),
        (["conv4", "--iterations", "0"], "--iterations must be a positive integer, got 0"),
        (["conv4", "--weights", "w.pt", "--save-weights", "v.pt"], "with --weights nothing is trained"),
        (["conv4", "--dataset", "sinusoid", "--within-alphabet"], "--within-alphabet needs a dataset of alphabets"),
    ],
)
def test_evaluate_user_mistakes_are_one_line(tmp_path, capsys, extra, expected):
    assert main(["evaluate", *extra, "--preset", "smoke", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("nas-meta: error:")
    assert expected in err
    assert not any(p.suffix == ".pt" for p in tmp_path.rglob("*"))


def test_export_retrain_with_its_own_budget(searched, tmp_path):
    root, cfg, _ = searched
    out = tmp_path / "longer"
    args = [
        "export",
        "--study",
        "e",
        "--results-dir",
        str(root / "results"),
        "--retrain",
        "--iterations",
        "9",
        "--out",
        str(out),
        "--cache-dir",
        str(root / "cache"),
    ]
    assert main(args) == 0
    card = json.loads((out / "rank1" / "card.json").read_text())
    assert card["retrain"]["iterations"] == 9 != cfg.learner.iterations


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_evaluate_refuses_a_space_name_that_is_also_a_path_here(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conv4").mkdir() if kind == "folder" else (tmp_path / "conv4").write_text("{}")
    assert main(["evaluate", "conv4", "--preset", "smoke", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"nas-meta: error: 'conv4' is both a shipped space and a {kind} here; write ./conv4 for the {kind}, "
        "or run from another folder for the space"
    ]


def _export(root, out, *extra):
    args = ["export", "--study", "e", "--results-dir", str(root / "results"), "--out", str(out)]
    return main([*args, "--cache-dir", str(root / "cache"), *extra])


def test_an_export_replaces_the_previous_one_whole(searched):
    root, _, _ = searched
    out = root / "whole"
    assert _export(root, out, "--top", "2", "--retrain", "--iterations", "2") == 0
    assert (out / "rank1" / "weights.pt").is_file() and (out / "rank2" / "weights.pt").is_file()
    # A later export without retraining: no weights of the older one stay behind, nor its rank 2.
    assert _export(root, out, "--top", "1") == 0
    assert sorted(p.name for p in out.iterdir()) == ["rank1"]
    assert not (out / "rank1" / "weights.pt").exists()
    assert "retrain" not in json.loads((out / "rank1" / "card.json").read_text())


def test_an_export_stopped_half_way_leaves_the_previous_one_as_it_was(searched, monkeypatch):
    import nas_meta.export as export_module

    root, _, _ = searched
    out = root / "stopped"
    assert _export(root, out, "--top", "2") == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real, calls = export_module.retrain, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while rank 2 retrains
        return real(*args, **kwargs)

    monkeypatch.setattr(export_module, "retrain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_module.export_trials(
            searched[2].study,
            searched[1],
            export_module.choose_exports(searched[2].study, "classification", top=2),
            out,
            retrain_them=True,
        )
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # rank 1 not from the new run, rank 2 not from the old: the old export whole
    assert sorted(p.name for p in out.iterdir()) == ["rank1", "rank2"]  # nothing staged is left


def test_an_export_without_retraining_says_its_weights_are_untrained_and_loads_them_the_same(searched):
    from nas_meta.model import network

    root, cfg, _ = searched
    out = root / "untrained"
    assert _export(root, out) == 0
    folder = out / "rank1"
    card = json.loads((folder / "card.json").read_text())
    assert card["weights"] == "untrained" and card["init_seed"] == cfg.seed
    assert "untrained: the initial weights of seed" in (folder / "README.md").read_text()
    state = torch.get_rng_state()
    loads = [nas_meta.load(folder).state_dict() for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)  # load() draws nothing from the global random state
    seeded = network.build(graph.load_json(folder / "arch.json"), (1, 28, 28), seed=card["init_seed"]).state_dict()
    for name in seeded:
        assert torch.equal(loads[0][name], loads[1][name]) and torch.equal(loads[0][name], seeded[name]), name


def test_a_card_of_trained_weights_without_the_file_is_a_clear_error(searched, tmp_path):
    root, _, _ = searched
    out = tmp_path / "trained"
    assert _export(root, out, "--retrain", "--iterations", "1") == 0
    folder = out / "rank1"
    assert json.loads((folder / "card.json").read_text())["weights"] == "trained"
    trained = nas_meta.load(folder).state_dict()
    (folder / "weights.pt").unlink()
    with pytest.raises(DataError, match=r"says the trained weights are in weights.pt, but there is no"):
        nas_meta.load(folder)
    untrained = nas_meta.load(folder, weights=False).state_dict()
    assert any(not torch.equal(trained[name], untrained[name]) for name in trained)


def test_an_export_the_disk_refuses_at_the_swap_leaves_the_previous_one_as_it_was(searched, monkeypatch, capsys):
    import errno
    import os
    from pathlib import Path

    root, _, _ = searched
    out = root / "swapped"
    assert _export(root, out, "--top", "2") == 0
    before = {str(p.relative_to(out)): p.read_bytes() if p.is_file() else None for p in out.rglob("*")}
    real_rename = Path.rename

    def rename(self, target):
        if self.parent.name.startswith(".staging-") and self.name == "rank2":  # the old ranks are moved aside
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self), str(target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    capsys.readouterr()
    assert _export(root, out, "--top", "2") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.strip() == f"nas-meta: error: {out / 'rank2'}: No space left on device"
    after = {str(p.relative_to(out)): p.read_bytes() if p.is_file() else None for p in out.rglob("*")}
    assert after == before  # rank 1 moved back, not the new one; no staging or .old folder left
