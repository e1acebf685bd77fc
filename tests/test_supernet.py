"""Weight sharing: the supernet's paths are the standalone networks; its search and its resume."""

from __future__ import annotations

import io
import random
import re
import textwrap

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas_meta import graph
from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.data import load_dataset
from nas_meta.errors import ConfigError, SpaceError
from nas_meta.learners import build_learner, meta_train
from nas_meta.model import network
from nas_meta.model.supernet import SuperNet
from nas_meta.record import StudyAttr, counted_trials
from nas_meta.search import supernet as supernet_module
from nas_meta.search.proxies import compute_proxies
from nas_meta.search.runner import prepare, run_search
from nas_meta.search.study import load_study
from nas_meta.search.supernet import (
    architectures,
    build_supernet,
    derived_params,
    inherit_learner,
    train_supernet,
)
from nas_meta.spaces import load_space

SHAPE = (1, 12, 12)


@pytest.fixture
def tiny_chain(tmp_path):
    path = tmp_path / "tiny_chain.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            kind: chain
            depth: [1, 2]
            width: [4, 6]
            kernel: [3, 5]
            pool: [max, avg]
            skip: [false, true]
            norm: batch
            """
        )
    )
    return load_space(path)


@pytest.fixture
def tiny_cell(tmp_path):
    path = tmp_path / "tiny_cell.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            kind: cell
            ops: [none, skip_connect, sep_conv_3x3, max_pool_3x3]
            nodes: 2
            layout: [normal, reduce]
            channels: 4
            stem_channels: 6
            """
        )
    )
    return load_space(path)


def test_every_architecture_of_a_small_space_is_listed_once_and_is_a_path(tiny_chain):
    archs = list(architectures(tiny_chain, 10_000))
    # depth 1: 2*2*2*2 = 16 blocks; depth 2: 16**2 = 256
    assert len(archs) == tiny_chain.size() == 16 + 256
    assert len({graph.fingerprint(a) for a in archs}) == len(archs)
    net = SuperNet(archs, SHAPE, seed=0)
    assert all(net.covers(a) for a in archs)
    # Weight slicing: block 2's 3x3 conv holds the widest variant (6 filters over 6 inputs).
    slot = net.index[("b2_conv", "conv_3x3", "weight")]
    assert tuple(net.bank[slot].shape) == (6, 6, 3, 3)
    # A width the space never offers is not a path.
    wider = tiny_chain.build(lambda name, options: False if name.endswith("skip") else options[-1])
    wider.nodes["b2_conv"]["c_out"] = 8
    assert not net.covers(wider)
    with pytest.raises(SpaceError, match="b2_conv"):
        net.set_path(wider)


def test_listing_refuses_a_space_past_the_limit():
    with pytest.raises(Exception, match="more than 100"):
        list(architectures(load_space("chain"), 100))


@pytest.mark.parametrize("space_fixture", ["tiny_chain", "tiny_cell"])
def test_a_fixed_path_computes_the_standalone_network_outputs_and_gradients(space_fixture, request):
    space = request.getfixturevalue(space_fixture)
    net = build_supernet(space, SHAPE, seed=0).double()
    rng = random.Random(1)
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    for _ in range(4):
        arch = space.sample(rng)
        net.set_path(arch)
        standalone = net.inherit(network.build(arch, SHAPE).double())
        own = dict(standalone.named_parameters())
        for name, value in net.path_params().items():
            assert torch.equal(own[name], value)
        net.zero_grad(set_to_none=True)
        out = net(x)
        reference = standalone(x)
        width = reference.shape[1]
        assert torch.equal(out[:, :width], reference)
        assert torch.count_nonzero(out[:, width:]) == 0  # zero-padded to the widest path
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        (reference * weights[:, :width]).sum().backward()
        grads = {name: own[name].grad for name in own}
        for name, i, slices in net._paths[net._path][1]:
            bank_grad = net.bank[i].grad
            torch.testing.assert_close(bank_grad[slices], grads[name], rtol=1e-12, atol=1e-12)
            rest = bank_grad.clone()
            rest[slices] = 0
            # Shared slots can appear once per path only, so outside its slice nothing moved.
            assert torch.count_nonzero(rest) == 0


def test_inherited_weights_load_into_the_standalone_network_for_fine_tuning(tiny_chain):
    net = build_supernet(tiny_chain, SHAPE, seed=0)
    arch = tiny_chain.sample(random.Random(3))
    backbone = net.inherit(network.build(arch, SHAPE, seed=5))
    bank_before = [p.detach().clone() for p in net.bank]
    start = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    for name, value in net.path_params(arch).items():
        assert torch.equal(start[name], value)
    cfg = make_config("smoke", learner={"algo": "protonet", "iterations": 3, "eval_every": 3})
    dataset = load_dataset(cfg.replace(data={"image_size": 12}).data)
    from nas_meta.data.episodes import episode_samplers

    train, val = episode_samplers(cfg, dataset, 0, 1, torch.device("cpu"))
    learner = build_learner(cfg.learner, backbone, feature_dim=backbone.feature_dim, ways=5, task="classification")
    meta_train(learner, train, None, cfg.learner, seed=0)
    moved = [n for n, p in backbone.named_parameters() if not torch.equal(p, start[n])]
    assert moved  # fine-tuned from the inherited weights
    assert all(torch.equal(a, b) for a, b in zip(bank_before, net.bank, strict=True))  # a copy, not a view


def test_maml_inherits_the_head_slice(tiny_chain):
    cfg = make_config("smoke", learner={"algo": "fomaml"})
    net = build_supernet(tiny_chain, SHAPE, seed=0)
    trained = build_learner(cfg.learner, net, feature_dim=net.feature_dim, ways=3, task="classification")
    with torch.no_grad():
        trained.head.weight.copy_(torch.randn_like(trained.head.weight))
        trained.head.bias.fill_(0.5)
    arch = tiny_chain.build(lambda name, options: options[0])  # depth 1: width 4 on a 6x6 map
    backbone = network.build(arch, SHAPE, seed=0)
    learner = build_learner(cfg.learner, backbone, feature_dim=backbone.feature_dim, ways=3, task="classification")
    inherit_learner(learner, trained)
    assert torch.equal(learner.head.weight, trained.head.weight[:, : backbone.feature_dim])
    assert torch.equal(learner.head.bias, trained.head.bias)
    for name, value in net.path_params(arch).items():
        assert torch.equal(dict(backbone.named_parameters())[name], value)


def _smoke(tmp_path, **search):
    return make_config(
        "smoke",
        learner={"algo": "protonet"},
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": "w", **search},
        results_dir=str(tmp_path / "results"),
    )


def test_a_killed_supernet_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(supernet_module, "SAVE_EVERY", 2)
    cfg = _smoke(tmp_path)
    objective = prepare(cfg).objective
    args = (cfg, objective.space, objective.dataset, torch.device("cpu"), 5)
    whole, record = train_supernet(*args, tmp_path / "whole.pt")
    assert record["steps"] == 5 and record["cpu_seconds"] > 0
    steps_seen = []

    def stop_at_step_4() -> bool:
        return len(steps_seen) >= 3

    with pytest.raises(KeyboardInterrupt):
        train_supernet(
            *args, tmp_path / "killed.pt", progress=lambda s, n, loss: steps_seen.append(s), should_stop=stop_at_step_4
        )
    assert steps_seen == [1, 2, 3]
    assert torch.load(tmp_path / "killed.pt", weights_only=False)["record"]["steps"] == 2  # the last block kept
    resumed_steps = []
    resumed, _ = train_supernet(*args, tmp_path / "killed.pt", progress=lambda s, n, loss: resumed_steps.append(s))
    assert resumed_steps == [3, 4, 5]  # continued, not restarted
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # A checkpoint of another run is refused, not continued; a damaged one is one line too.
    other = cfg.replace(seed=1)
    with pytest.raises(ConfigError, match="delete it or use another --study"):
        train_supernet(other, *args[1:], tmp_path / "whole.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read .*bad.pt: .*; delete it to train the network again"):
        train_supernet(*args, tmp_path / "bad.pt")


def test_supernet_search_scores_candidates_on_inherited_weights_and_trains_the_best(tmp_path):
    cfg = _smoke(tmp_path, trials=2, strategy="supernet", prescreen="supernet", prescreen_pool=3, supernet_steps=4)
    outcome = run_search(cfg, stream=io.StringIO())
    study = load_study("w", outcome.storage)
    assert study.user_attrs[StudyAttr.SUPERNET]["steps"] == 4
    assert (outcome.directory / "supernet.pt").is_file()
    assert len(counted_trials(study)) == 2
    screened = [t for t in study.trials if "screening" in t.user_attrs]
    assert len(screened) == 6
    objective = prepare(cfg).objective
    objective.supernet, _ = train_supernet(
        cfg, objective.space, objective.dataset, torch.device("cpu"), 4, outcome.directory / "supernet.pt"
    )
    for t in screened[:3]:
        arch = graph.from_json(t.user_attrs["arch"])
        expected = compute_proxies(objective.proxy_inputs(arch, t.number), ["supernet"])["supernet"][0]
        assert t.user_attrs["screening"] == {"proxy": "supernet", "value": pytest.approx(expected)}
        assert 0.0 <= expected <= 1.0
    winners = [t for t in screened if t.state == TrialState.FAIL]
    assert len(winners) == 2
    for winner in winners:
        trained = study.trials[winner.user_attrs["promoted_to"]]
        assert trained.state == TrialState.COMPLETE and trained.params == winner.params
    # Resume: the supernet is loaded, not trained again, and the study grows to the new total.
    outcome = run_search(cfg.replace(search={"trials": 3}), stream=io.StringIO())
    assert len(counted_trials(optuna.load_study(study_name="w", storage=outcome.storage))) == 3


def _line(message: str, prog: str = "nas-meta") -> str:
    return re.escape(f"{prog}: error: {message}")


@pytest.mark.parametrize(
    "extra, line",
    [
        pytest.param(
            ["--prescreen", "supernet"],
            _line("--prescreen supernet needs a trained supernet: use --strategy supernet"),
            id="prescreen-supernet",
        ),
        pytest.param(
            ["--strategy", "supernet", "--prescreen", "synflow"],
            _line("--strategy supernet scores candidates by their inherited weights; drop --prescreen 'synflow'"),
            id="supernet-prescreen",
        ),
        pytest.param(
            ["--strategy", "supernet", "--supernet-steps", "0"],
            _line("--supernet-steps must be a positive integer, got 0"),
            id="supernet-steps-0",
        ),
        pytest.param(
            ["--strategy", "dart"],
            # argparse's own words; Python versions differ in quoting the choices.
            _line("argument --strategy: invalid choice: 'dart' (choose from ", prog="nas-meta search")
            + r"'?scratch'?, '?supernet'?, '?darts'?\)",
            id="unknown-strategy",
        ),
        pytest.param(
            ["--strategy", "supernet", "--sampler", "nsga2"],
            _line(
                "--strategy supernet cannot be used with --sampler nsga2: candidates scored on inherited weights "
                "are recorded as pruned trials, which multi-objective studies cannot hold; choose another --sampler"
            ),
            id="supernet-nsga2",
        ),
        pytest.param(
            ["--strategy", "darts", "--prescreen", "params"],
            _line("--strategy darts derives one architecture; drop --prescreen 'params'"),
            id="darts-prescreen",
        ),
    ],
)
def test_strategy_mistakes_are_one_line_and_write_nothing(tmp_path, capsys, extra, line):
    argv = ["search", "--space", "chain", "--algo", "protonet", "--preset", "smoke", "--results-dir", str(tmp_path)]
    try:
        code = main([*argv, *extra])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    # The whole of stderr is that one line: no usage block, warning or traceback before it.
    assert re.fullmatch(line + r"\n", err), err
    assert not any(tmp_path.iterdir())


# --- the differentiable search ---------------------------------------------------------------


def test_darts_discretises_to_the_strongest_two_edges_and_an_ordinary_architecture(tiny_cell):
    from nas_meta.model.darts import DartsNetwork, edges

    net = DartsNetwork.from_space(tiny_cell, SHAPE, seed=0)
    ops = tiny_cell.ops  # none, skip_connect, sep_conv_3x3, max_pool_3x3
    order = edges(tiny_cell.nodes)  # (2,0) (2,1) (3,0) (3,1) (3,2)
    assert order == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    with torch.no_grad():
        for alpha in net.alphas.values():
            alpha.zero_()
        a = net.alphas["normal"]
        a[order.index((2, 0)), ops.index("sep_conv_3x3")] = 2.0
        a[order.index((2, 1)), ops.index("max_pool_3x3")] = 1.0
        a[order.index((3, 0)), ops.index("none")] = 9.0  # 'none' is never chosen, nor does it make an edge strong
        a[order.index((3, 0)), ops.index("skip_connect")] = 0.5
        a[order.index((3, 1)), ops.index("skip_connect")] = 3.0
        a[order.index((3, 2)), ops.index("sep_conv_3x3")] = 4.0
    genotype = net.genotype()
    assert genotype["normal_n2_inputs"] == "0-1"
    assert (genotype["normal_n2_op0"], genotype["normal_n2_op1"]) == ("sep_conv_3x3", "max_pool_3x3")
    assert genotype["normal_n3_inputs"] == "1-2"
    assert (genotype["normal_n3_op0"], genotype["normal_n3_op1"]) == ("skip_connect", "sep_conv_3x3")
    arch = tiny_cell.from_params(genotype)  # validates: an architecture of the space
    again = graph.from_json(graph.to_json(arch))
    assert graph.fingerprint(again) == graph.fingerprint(arch)
    assert network.build(again, SHAPE).feature_dim == 2 * tiny_cell.channels[0] * 2  # reduce doubles; 2 nodes


def test_darts_training_moves_both_the_weights_and_the_architecture(tmp_path):
    cfg = _smoke(tmp_path, space="cell", strategy="darts", supernet_steps=2).replace(data={"image_size": 12})
    objective = prepare(cfg).objective
    learner, record = train_supernet(cfg, objective.space, objective.dataset, torch.device("cpu"), 0)
    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    learner, record = train_supernet(cfg, objective.space, objective.dataset, torch.device("cpu"), 2)
    assert record["steps"] == 2
    after = dict(learner.named_parameters())
    alphas = [n for n in after if "alphas" in n]
    assert alphas and all(not torch.equal(before[n], after[n]) for n in alphas)
    weights = [n for n in after if "alphas" not in n and not torch.equal(before[n], after[n])]
    assert weights


def test_darts_search_trains_the_derived_architecture_as_a_trial_and_resumes(tmp_path):
    cfg = _smoke(tmp_path, space="cell", strategy="darts", supernet_steps=2, trials=1)
    outcome = run_search(cfg, stream=io.StringIO())
    study = load_study("w", outcome.storage)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["derived"] == {"strategy": "darts", "steps": 2}
    learner, _ = train_supernet(
        cfg,
        prepare(cfg).objective.space,
        prepare(cfg).objective.dataset,
        torch.device("cpu"),
        2,
        outcome.directory / "supernet.pt",
    )
    assert trial.params == derived_params(learner, prepare(cfg).objective.space)
    assert trial.params["normal_n3_inputs"] in ("0-1", "0-2", "1-2")  # the choices, not the fixed n2 pair
    assert study.user_attrs[StudyAttr.SUPERNET]["strategy"] == "darts"
    # More trials: the derived one is not queued again; the sampler goes on.
    outcome = run_search(cfg.replace(search={"trials": 2}), stream=io.StringIO())
    trials = load_study("w", outcome.storage).trials
    assert len(trials) == 2 and sum("derived" in t.user_attrs for t in trials) == 1


@pytest.mark.parametrize(
    "space_text, message",
    [
        ("kind: chain\ndepth: [1, 2]\nwidth: 4\n", "is of kind 'chain'; choose --strategy supernet or scratch"),
        ("kind: cell\nnodes: 2\nchannels: [4, 8]\n", "has a choice of channels [4, 8]: fix it in the space file"),
    ],
)
def test_darts_refuses_a_space_it_cannot_relax_in_one_line(tmp_path, capsys, space_text, message):
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    out = tmp_path / "out"
    code = main(
        ["search", "--space", str(space), "--preset", "smoke", "--strategy", "darts", "--results-dir", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"nas-meta: error: --strategy darts relaxes [^\n]*" + re.escape(message) + "\n", err), err
    assert not out.exists()
