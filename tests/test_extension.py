"""The extension points, proven from outside the package: a learner and a sampler registered by a
user run a search end to end, named on the command line like the built-in ones."""

from __future__ import annotations

import io

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.errors import ConfigError
from nas_meta.learners import LEARNERS, ProtoNet
from nas_meta.record import counted_trials
from nas_meta.search.runner import prepare, run_search
from nas_meta.search.samplers import SAMPLERS
from nas_meta.search.study import load_study, stored_config


class CosinePrototypes(nn.Module):
    """A learner of the user's: prototypes compared by scaled cosine similarity (Chen et al. 2019)."""

    task = "classification"

    def __init__(self, backbone: nn.Module, scale: float = 10.0) -> None:
        super().__init__()
        self.backbone, self.scale = backbone, scale

    def _logits(self, batch) -> torch.Tensor:
        proto = ProtoNet(self.backbone)
        s = batch.support_x.shape[1]
        z = F.normalize(proto.embed(torch.cat([batch.support_x, batch.query_x], 1)), dim=-1)
        onehot = F.one_hot(batch.support_y, batch.ways).float()  # (T, S, ways)
        centres = F.normalize(onehot.transpose(1, 2) @ z[:, :s], dim=-1)  # (T, ways, F)
        return self.scale * z[:, s:] @ centres.transpose(1, 2)  # (T, Q, ways)

    def loss(self, batch):
        logits = self._logits(batch)
        accuracy = (logits.argmax(-1) == batch.query_y).float().mean()
        return F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten()), accuracy.detach()

    def evaluate(self, batch):
        with torch.no_grad():
            return (self._logits(batch).argmax(-1) == batch.query_y).float().mean(-1)


@pytest.fixture
def toy_learner():
    LEARNERS.add("cosine_protos", lambda cfg, backbone, *, feature_dim, ways, task: CosinePrototypes(backbone))
    yield "cosine_protos"
    LEARNERS.remove("cosine_protos")


ASKED: list[str] = []


class CountingBruteForce(optuna.samplers.BruteForceSampler):
    """Optuna's exhaustive sampler, counting the choices it is asked for."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        ASKED.append(param_name)
        return super().sample_independent(study, trial, param_name, param_distribution)


@pytest.fixture
def toy_sampler():
    ASKED.clear()
    SAMPLERS.add("bruteforce", lambda seed: CountingBruteForce(seed=seed))
    yield "bruteforce"
    SAMPLERS.remove("bruteforce")


def test_a_registered_learner_runs_a_search(tmp_path, toy_learner):
    cfg = make_config(
        "smoke",
        learner={"algo": toy_learner},
        search={"space": "chain", "trials": 2},
        data={"cache_dir": str(tmp_path / "c")},
        results_dir=str(tmp_path / "r"),
    )
    study = run_search(cfg, stream=io.StringIO()).study
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and all(0.0 <= t.values[0] <= 1.0 for t in done)
    # It learned: the validation score moved over training (a constant would mean no gradient reached it).
    assert any(len({v for _, v in t.user_attrs["curve"]}) > 1 for t in done)


def test_a_registered_sampler_runs_a_search_from_the_command_line(tmp_path, toy_sampler, capsys):
    code = main(
        [
            "search",
            "--space",
            "chain",
            "--algo",
            "protonet",
            "--preset",
            "smoke",
            "--sampler",
            toy_sampler,
            "--trials",
            "2",
            "--results-dir",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    study = load_study("chain-protonet-glyphs", f"sqlite:///{tmp_path}/r/chain-protonet-glyphs/study.db")
    assert len(counted_trials(study)) == 2 and stored_config(study).search.sampler == "bruteforce"
    # Every choice of both trials came from the registered sampler.
    assert "depth" in ASKED and len(ASKED) == sum(len(t.params) for t in study.trials)


def test_unregistered_names_are_refused_with_the_registered_ones(tmp_path, toy_learner):
    cfg = make_config("smoke", learner={"algo": "mamll"}, results_dir=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match=r"unknown learner 'mamll'; choose from \['cosine_protos', 'fomaml', "):
        prepare(cfg)
    with pytest.raises(ConfigError, match=r"unknown sampler 'cmaes'; choose from \['evolution', 'local', 'nsga2', "):
        prepare(make_config("smoke", search={"sampler": "cmaes"}))
    assert not (tmp_path / "r").exists()
