"""The training recipe: rotated classes, affine jitter, best-checkpoint weights, AdamW and cosine
schedule, refit on train+val, and the CLI options that carry them into the study."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from test_train import CFG, RandomEpisodes, make

from nas_meta.cli import main
from nas_meta.config import LearnerConfig, make_config
from nas_meta.data import ImageDataset, load_dataset
from nas_meta.data.augment import DEFAULT_JITTER, Jitter, affine_matrices, random_affine
from nas_meta.data.base import merge_train_val, rotate_classes
from nas_meta.data.episodes import episode_samplers
from nas_meta.errors import ConfigError
from nas_meta.learners import meta_train
from nas_meta.learners.train import make_optimizer, make_schedule
from nas_meta.retrain import retrain
from nas_meta.search.runner import run_search
from nas_meta.search.study import load_study, stored_config
from nas_meta.spaces import load_known_arch

SIZE = 6


def indexed_dataset(classes: int = 9, per_class: int = 4) -> ImageDataset:
    """Images that encode their own row: pixel (0, 0) is the row, pixel (0, 1) its class, the rest
    a per-row pattern, so a drawn image can be traced back to the row it came from."""
    n = classes * per_class
    images = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(per_class)
    images[:, 0, 0, 1] = labels.to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    images[:, :, 1:, :] = torch.randint(1, 256, (n, 1, SIZE - 1, SIZE), generator=g, dtype=torch.uint8)
    names = [f"alpha{c % 3}/char{c}" for c in range(classes)]
    splits = {"train": [0, 1, 2, 3, 4], "val": [5, 6], "test": [7, 8]}
    return ImageDataset("indexed", images, labels, names, splits)


def rows_of(ds: ImageDataset, x: torch.Tensor) -> list[int]:
    """The dataset rows whose images ``x`` (..., 1, H, W) floats in [0, 1] are exactly; -1 if none."""
    flat = (x.reshape(-1, SIZE * SIZE) * 255).round().to(torch.uint8)
    table = ds.images.reshape(len(ds.images), -1)
    out = []
    for img in flat:
        match = (table == img).all(1).nonzero().flatten()
        out.append(int(match[0]) if len(match) else -1)
    return out


# ---------------------------------------------------------------- rotated classes


def test_rotated_classes_stay_in_their_split_and_keep_their_labels() -> None:
    ds = indexed_dataset()
    rot = rotate_classes(ds)
    n = len(ds.class_names)
    assert rot.splits["val"] == ds.splits["val"] and rot.splits["test"] == ds.splits["test"]
    assert rot.splits["train"] == ds.splits["train"] + list(range(n, n + 3 * 5))
    assert len(rot.class_names) == n + 15 and rot.rotated_classes
    # Original classes untouched: same rows, same ids.
    assert torch.equal(rot.images[: len(ds.images)], ds.images) and torch.equal(rot.labels[: len(ds.labels)], ds.labels)
    for i, c in enumerate(ds.splits["train"]):
        originals = ds.images[ds.labels == c]
        for k in (1, 2, 3):
            new = n + 3 * i + k - 1
            assert rot.class_names[new] == f"{ds.class_names[c]}/rot{90 * k}"
            assert rot.class_names[new].split("/")[0] == ds.class_names[c].split("/")[0]  # same alphabet
            assert torch.equal(rot.images[rot.labels == new], torch.rot90(originals, k, dims=(2, 3)))
    # No rotated image carries a validation or test class's label.
    held_out = torch.tensor(ds.splits["val"] + ds.splits["test"])
    assert not torch.isin(rot.labels[len(ds.labels) :], held_out).any()


def test_rotations_are_not_added_twice_and_need_square_images() -> None:
    rot = rotate_classes(indexed_dataset())
    assert rotate_classes(rot) is rot  # the vinyals protocol's classes are rotations already
    wide = ImageDataset(
        "wide",
        torch.zeros(4, 1, 4, 6, dtype=torch.uint8),
        torch.tensor([0, 0, 1, 1]),
        ["a/0", "a/1"],
        {"train": [0, 1], "val": [], "test": []},
    )
    with pytest.raises(ConfigError, match="--rotations needs square images, dataset 'wide' has 4x6"):
        rotate_classes(wide)


def test_load_dataset_rotates_training_classes_of_glyphs(tmp_path) -> None:
    cfg = make_config("smoke", data={"cache_dir": str(tmp_path), "rotations": True}).data
    plain = load_dataset(make_config("smoke", data={"cache_dir": str(tmp_path)}).data)
    rotated = load_dataset(cfg)
    assert len(rotated.splits["train"]) == 4 * len(plain.splits["train"])
    assert rotated.splits["val"] == plain.splits["val"] and rotated.splits["test"] == plain.splits["test"]


def test_rotations_and_augment_refuse_a_dataset_without_images() -> None:
    for option in ("rotations", "augment"):
        cfg = make_config("smoke", data={"dataset": "sinusoid", option: True})
        with pytest.raises(ConfigError, match=f"--{option} is for image datasets"):
            load_dataset(cfg.data)


# ---------------------------------------------------------------- affine jitter


def test_affine_matrices_identity_and_exact_one_pixel_shift() -> None:
    assert torch.allclose(affine_matrices(torch.zeros(3, 5)), torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3))
    x = torch.zeros(1, 1, SIZE, SIZE)
    x[0, 0, 2, 3] = 1.0
    # A shift of one pixel: grid coordinates span 2 over SIZE pixels.
    jitter = Jitter(shift=1.0 / SIZE, rotate=0.0, scale=0.0, shear=0.0)
    theta = affine_matrices(torch.tensor([[0.0, 0, 0, 1.0, 0]]), jitter)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, SIZE, SIZE], align_corners=False)
    y = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    expected = torch.zeros_like(x)
    expected[0, 0, 2, 2] = 1.0  # output pixel (2, 2) reads input (2, 3)
    assert torch.allclose(y, expected, atol=1e-6)


def test_jitter_moves_pixels_within_its_ranges() -> None:
    u = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0], [0, 0, 0, 1.0, -1.0]])
    m = affine_matrices(u)
    angle = math.radians(DEFAULT_JITTER.rotate)
    assert torch.allclose(
        m[0, :, :2], torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]), atol=1e-6
    )
    assert torch.allclose(m[1, :, :2], torch.eye(2) / (1 + DEFAULT_JITTER.scale))
    assert torch.allclose(m[2, :, 2], torch.tensor([2 * DEFAULT_JITTER.shift, -2 * DEFAULT_JITTER.shift]))


def test_random_affine_is_reproducible_from_its_generator() -> None:
    x = torch.rand(2, 3, 1, SIZE, SIZE)
    a = random_affine(x, torch.Generator().manual_seed(4))
    b = random_affine(x, torch.Generator().manual_seed(4))
    c = random_affine(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape


def test_augmentation_only_touches_training_episodes(tmp_path) -> None:
    ds = indexed_dataset()
    cfg = make_config("smoke", data={"ways": 2, "shots": 1, "queries": 2, "augment": True})
    train, val = episode_samplers(cfg, ds, 3, 4, "cpu")
    plain_cfg = make_config("smoke", data={"ways": 2, "shots": 1, "queries": 2})
    plain_train, _ = episode_samplers(plain_cfg, ds, 3, 4, "cpu")
    test = ds.sampler("test", ways=2, shots=1, queries=2, seed=5)
    for sampler in (val, test):  # every image is exactly a dataset row of its split, with its label
        batch = sampler.sample(6)
        for x in (batch.support_x, batch.query_x):
            rows = rows_of(ds, x)
            assert -1 not in rows
            assert set(ds.labels[rows].tolist()) <= set(ds.splits["val" if sampler is val else "test"])
    jittered, raw = train.sample(5), plain_train.sample(5)
    # The same classes and images are drawn with or without jitter; only the pixels differ.
    assert torch.equal(jittered.support_y, raw.support_y)
    raw_rows = rows_of(ds, raw.query_x)
    assert -1 not in raw_rows
    jittered_rows = rows_of(ds, jittered.query_x)
    assert jittered_rows.count(-1) >= len(jittered_rows) - 1  # (a jitter can land on identity only by chance)
    # Reproducible from the seed.
    again, _ = episode_samplers(cfg, ds, 3, 4, "cpu")
    assert torch.equal(again.sample(5).query_x, jittered.query_x)


# ---------------------------------------------------------------- best checkpoint, optimizer, schedule


def test_best_checkpoint_weights_are_those_of_the_curves_best_point() -> None:
    cfg = LearnerConfig(**{**CFG.__dict__, "iterations": 6, "eval_every": 1, "checkpoint": "best"})
    states: dict[int, dict[str, torch.Tensor]] = {}
    learner = make("protonet", dropout=0.0)
    current = [learner]

    def report(step: int, value: float) -> None:
        states[step] = {k: v.clone() for k, v in current[0].state_dict().items()}

    result = meta_train(learner, RandomEpisodes(1), RandomEpisodes(2), cfg, seed=0, report=report)
    values = [v for _, v in result.curve]
    best = values.index(max(values))  # the first of equal maxima
    assert result.best_step == result.weights_step == result.curve[best][0] and result.val_metric == max(values)
    for k, v in learner.state_dict().items():
        assert torch.equal(v, states[result.best_step][k])
    # The last step's weights otherwise.
    last = make("protonet", dropout=0.0)
    current[0] = last
    cfg_last = LearnerConfig(**{**cfg.__dict__, "checkpoint": "last"})
    states.clear()
    result = meta_train(last, RandomEpisodes(1), RandomEpisodes(2), cfg_last, seed=0, report=report)
    assert result.weights_step == 6 and result.val_metric == result.curve[-1][1]
    assert result.best_step == max(result.curve, key=lambda p: p[1])[0]  # still known, for a refit
    assert all(torch.equal(v, states[6][k]) for k, v in last.state_dict().items())


def test_the_best_checkpoint_is_chosen_even_when_it_is_not_last(monkeypatch) -> None:
    """A validation curve that peaks in the middle: the weights of that step are kept."""
    import nas_meta.learners.train as train_module

    scores = iter([0.2, 0.9, 0.5])
    monkeypatch.setattr(train_module, "evaluate_episodes", lambda *a, **k: torch.tensor([next(scores)]))
    cfg = LearnerConfig(**{**CFG.__dict__, "iterations": 3, "eval_every": 1, "checkpoint": "best"})
    learner = make("protonet", dropout=0.0)
    seen = {}
    result = meta_train(
        learner,
        RandomEpisodes(1),
        RandomEpisodes(2),
        cfg,
        seed=0,
        report=lambda s, v: seen.setdefault(s, {k: t.clone() for k, t in learner.state_dict().items()}),
    )
    assert result.best_step == result.weights_step == 2 and result.val_metric == pytest.approx(0.9)
    assert all(torch.equal(v, seen[2][k]) for k, v in learner.state_dict().items())
    assert not all(torch.equal(v, seen[3][k]) for k, v in learner.state_dict().items())


def test_regression_keeps_the_lowest_mse(monkeypatch) -> None:
    import nas_meta.learners.train as train_module

    scores = iter([3.0, 1.0, 2.0])
    monkeypatch.setattr(train_module, "evaluate_episodes", lambda *a, **k: torch.tensor([next(scores)]))
    learner = make("protonet", dropout=0.0)
    learner.task = "regression"  # only the direction of "best" is read
    cfg = LearnerConfig(**{**CFG.__dict__, "iterations": 3, "eval_every": 1, "checkpoint": "best"})
    result = meta_train(learner, RandomEpisodes(1), RandomEpisodes(2), cfg, seed=0)
    assert result.best_step == 2 and result.val_metric == 1.0


def test_cosine_schedule_and_adamw_decay_follow_their_formulas() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    module = torch.nn.Module()
    module.p = param
    cfg = LearnerConfig(outer_lr=0.01, iterations=10, lr_schedule="cosine", weight_decay=0.5)
    opt = make_optimizer(module, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    schedule = make_schedule(opt, cfg)
    for step in range(1, 11):
        param.grad = torch.zeros(3)  # no gradient: only the decoupled decay moves the weight
        lr = opt.param_groups[0]["lr"]
        before = param.detach().clone()
        opt.step()
        assert torch.allclose(param.detach(), before * (1 - lr * 0.5))
        schedule.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.005 * (1 + math.cos(math.pi * step / 10)), abs=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    plain = LearnerConfig(outer_lr=0.01)
    assert type(make_optimizer(module, plain)) is torch.optim.Adam and make_schedule(opt, plain) is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("weight_decay", -1.0, "--weight-decay must be a number >= 0, got -1.0"),
        ("lr_schedule", "step", "unknown lr schedule 'step'; choose from ['constant', 'cosine']"),
        ("checkpoint", "first", "unknown checkpoint 'first'; choose from ['best', 'last']"),
        ("train_ways", 1, "--train-ways must be an integer of at least 2, got 1"),
    ],
)
def test_recipe_fields_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_config("smoke", learner={field: value})
    assert str(info.value) == message


# ---------------------------------------------------------------- refit


def test_refit_trains_on_train_and_val_classes_for_the_chosen_steps_and_never_on_test(tmp_path, monkeypatch) -> None:
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path), "rotations": True},
        learner={"algo": "protonet", "iterations": 6, "eval_every": 2, "checkpoint": "best"},
    )
    dataset = load_dataset(cfg.data)
    trained_on: list[set[int]] = []
    steps: list[int] = []
    import nas_meta.retrain as export_module

    real_samplers, real_train = export_module.episode_samplers, export_module.meta_train

    def spy_samplers(cfg_, ds, *args, **kwargs):
        train, val = real_samplers(cfg_, ds, *args, **kwargs)
        trained_on.append({int(c) for c in ds.splits["train"]})
        return train, val

    def spy_train(learner, train, val, lcfg, **kwargs):
        steps.append(lcfg.iterations)
        return real_train(learner, train, val, lcfg, **kwargs)

    monkeypatch.setattr(export_module, "episode_samplers", spy_samplers)
    monkeypatch.setattr(export_module, "meta_train", spy_train)
    _, result = retrain(cfg, load_known_arch("conv4")[1], dataset=dataset, refit="train+val")
    selection, refit = trained_on
    test = set(dataset.splits["test"])
    assert selection == set(dataset.splits["train"])
    assert not (refit & test) and not (selection & test)
    base = load_dataset(make_config("smoke", data={"cache_dir": str(tmp_path)}).data)
    assert set(base.splits["train"]) | set(base.splits["val"]) <= refit  # the validation classes joined
    assert len(refit) == 4 * (len(base.splits["train"]) + len(base.splits["val"]))  # and their rotations
    chosen = max(result["curve"], key=lambda p: p[1])[0]
    assert steps == [6, chosen] and result["refit"]["steps"] == chosen == result["weights_step"]
    assert 0 <= result["test"]["mean"] <= 1


def test_merge_train_val_keeps_test_and_refuses_a_dataset_without_classes() -> None:
    ds = indexed_dataset()
    merged = merge_train_val(ds)
    assert merged.splits == {"train": [0, 1, 2, 3, 4, 5, 6], "val": [], "test": [7, 8]}
    sinusoid = load_dataset(make_config("smoke", data={"dataset": "sinusoid"}).data)
    with pytest.raises(ConfigError, match="needs a dataset of classes"):
        merge_train_val(sinusoid)


# ---------------------------------------------------------------- the recipe in the CLI and the study


def test_recipe_options_reach_the_study_and_the_exported_card(tmp_path, capsys) -> None:
    results = tmp_path / "results"
    args = [
        "search",
        "--preset",
        "smoke",
        "--space",
        "chain",
        "--algo",
        "protonet",
        "--study",
        "r",
        "--trials",
        "1",
        "--results-dir",
        str(results),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--rotations",
        "--augment",
        "--train-ways",
        "6",
        "--weight-decay",
        "0.01",
        "--lr-schedule",
        "cosine",
        "--refit",
        "train+val",
        "--checkpoint",
        "last",
    ]
    assert main(args) == 0
    study = load_study("r", f"sqlite:///{results / 'r' / 'study.db'}")
    cfg = stored_config(study)
    assert cfg.recipe() == {
        "rotations": True,
        "augment": True,
        "train_ways": 6,
        "weight_decay": 0.01,
        "lr_schedule": "cosine",
        "checkpoint": "last",
        "refit": "train+val",
    }
    assert study.trials[0].user_attrs["weights_step"] == cfg.learner.iterations  # the last step's weights
    # Resuming under another recipe is refused: its scores would mean something else.
    assert main([*args[:-2], "--checkpoint", "best"]) == 2
    assert "was run with checkpoint='last', not 'best'" in capsys.readouterr().err
    capsys.readouterr()
    # The refit is the final model's business: a resume may change it.
    assert main([*args[:-4], "--refit", "train", "--checkpoint", "last", "--trials", "1"]) == 0
    out = tmp_path / "export"
    # export --retrain refits because the study's recipe says so (no --refit here).
    assert (
        main(
            [
                "export",
                "--study",
                "r",
                "--results-dir",
                str(results),
                "--retrain",
                "--out",
                str(out),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    card = json.loads((out / "rank1" / "card.json").read_text())
    assert card["recipe"] == cfg.recipe()
    assert card["retrain"]["refit"]["splits"] == "train+val"
    # The refit's length is the validation curve's best step, whichever weights the first run kept.
    best = max(card["retrain"]["curve"], key=lambda p: p[1])[0]
    assert card["retrain"]["refit"]["steps"] == card["retrain"]["weights_step"] == card["retrain"]["best_step"] == best
    assert "refit on train+val classes" in (out / "rank1" / "README.md").read_text()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--weight-decay", "-0.1"], "--weight-decay must be a number >= 0, got -0.1"),
        (["--lr-schedule", "linear"], "invalid choice: 'linear'"),
        (["--train-ways", "1"], "--train-ways must be an integer of at least 2, got 1"),
        (["--train-ways", "900"], "900"),  # more training ways than the split has classes
        (["--dataset", "sinusoid", "--space", "mlp", "--rotations"], "--rotations is for image datasets"),
    ],
)
def test_recipe_mistakes_are_one_line(tmp_path, capsys, extra, expected) -> None:
    args = [
        "search",
        "--preset",
        "smoke",
        "--results-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--algo",
        "protonet",
        *extra,
    ]
    if "sinusoid" in extra:
        args[args.index("protonet")] = "maml"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_refit_without_retrain_is_a_user_error(tmp_path, capsys) -> None:
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": "q", "trials": 1},
        results_dir=str(tmp_path / "results"),
    )
    run_search(cfg, stream=io.StringIO())
    assert (
        main(
            [
                "export",
                "--study",
                "q",
                "--results-dir",
                str(tmp_path / "results"),
                "--refit",
                "train+val",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 2
    )
    assert "--refit train+val chooses what --retrain trains on; add --retrain" in capsys.readouterr().err


def test_omniglot_defaults_to_the_winning_recipe_and_the_cli_can_turn_it_off() -> None:
    from nas_meta.cli import build_parser
    from nas_meta.cli.search import search_config

    on = make_config("quick", data={"dataset": "omniglot"})
    assert on.data.rotations and on.data.augment
    off = make_config("quick", data={"dataset": "glyphs"})
    assert not off.data.rotations and not off.data.augment  # not measured on glyphs: unchanged
    args = build_parser().parse_args(["search", "--dataset", "omniglot", "--no-rotations", "--no-augment"])
    cfg = search_config(args)
    assert not cfg.data.rotations and not cfg.data.augment
