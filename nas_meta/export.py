"""From a finished search to models people can load: best / top-k / Pareto architectures as files,
optional retraining with the preset's full budget and an honest meta-test on the test classes.

    >>> import nas_meta
    >>> backbone = nas_meta.load("results/cell-maml-glyphs/export/rank1")  # doctest: +SKIP
    >>> features = backbone(images)  # (B, C, H, W) float in [0, 1] -> (B, feature_dim)  # doctest: +SKIP

An exported folder holds ``arch.json`` (versioned node-link JSON: everything needed to rebuild the
network), ``arch.graphml``, ``arch.png``, ``card.json`` and ``README.md`` (parameters, FLOPs,
scores, provenance, the input the backbone expects), and with ``--retrain`` ``weights.pt`` (a dict
of state dicts, read with ``torch.load(weights_only=True)``).  The card's ``weights`` says which:
``"trained"``, or ``"untrained"``, the initial weights of its ``init_seed``, which :func:`load`
rebuilds the same on every call and an untrained ``model.onnx`` carries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from . import graph
from .config import RunConfig
from .data import load_dataset
from .errors import ConfigError, DataError, StudyError
from .fileio import atomic_write_json, atomic_write_text, output_file, output_folder
from .model import network
from .record import Attr, best_trials
from .retrain import load_weights, retrain, save_weights

__all__ = [
    "load",
    "export_onnx",
    "require_onnx",
    "load_weights",
    "select_trials",
    "Chosen",
    "choose_exports",
    "export_trials",
    "input_spec",
    "CARD_VERSION",
]

CARD_VERSION = 1
WEIGHTS = "weights.pt"
# A card's "weights": trained (in weights.pt, after --retrain) or untrained (the initial weights
# its "init_seed" gives, which load() rebuilds and model.onnx carries).
TRAINED, UNTRAINED = "trained", "untrained"
ONNX = "model.onnx"
ONNX_OPSET = 18


def input_spec(dataset: Any) -> dict[str, Any]:
    """What the backbone expects as input, written into every card."""
    if dataset.task == "regression":
        return {"shape": list(dataset.input_shape), "dtype": "float32", "range": "x in [-5, 5]"}
    spec: dict[str, Any] = {
        "shape": list(dataset.input_shape),
        "dtype": "float32",
        "range": "[0, 1] (uint8 pixels / 255)",
    }
    if dataset.input_shape[0] == 1:
        spec["polarity"] = "ink high: strokes near 1 on a background near 0 (white on black)"
    return spec


def select_trials(study: optuna.Study, task: str, *, top: int = 1, pareto: bool = False) -> list[FrozenTrial]:
    """The ``top`` best distinct trials, or the Pareto front of (score, parameter count)."""
    if pareto:
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if Attr.DUPLICATE_OF not in t.user_attrs and Attr.PARAMS in t.user_attrs
        ]
        sign = 1.0 if task == "classification" else -1.0

        def dominated(t: FrozenTrial) -> bool:
            s, p = sign * t.values[0], t.user_attrs[Attr.PARAMS]
            return any(
                sign * o.values[0] >= s
                and o.user_attrs[Attr.PARAMS] <= p
                and (sign * o.values[0] > s or o.user_attrs[Attr.PARAMS] < p)
                for o in done
            )

        chosen = sorted((t for t in done if not dominated(t)), key=lambda t: -sign * t.values[0])
    else:
        chosen = best_trials(study, task, k=top)
    if not chosen:
        raise StudyError(f"study {study.study_name!r} has no completed trial to export")
    return chosen


@dataclass(frozen=True)
class Chosen:
    """One architecture to export: a trial of the study, or the race's pick (which may be a
    baseline the search never trained as a trial)."""

    arch: dict[str, Any]  # node-link JSON
    number: int | None  # its trial (None: a baseline that entered the race only)
    fingerprint: str
    search_score: float | None  # its trial's validation score (None without a trial)
    baseline: str | None = None  # the baseline it is (conv4), if it is one
    race: dict[str, Any] | None = None  # on the race's pick: its race score and verdicts

    @classmethod
    def of_trial(cls, trial: FrozenTrial) -> Chosen:
        return cls(
            arch=trial.user_attrs[Attr.ARCH],
            number=trial.number,
            fingerprint=trial.user_attrs[Attr.FINGERPRINT],
            search_score=trial.values[0],
            baseline=trial.user_attrs.get(Attr.BASELINE),
        )


def choose_exports(study: optuna.Study, task: str, *, top: int = 1, pareto: bool = False) -> list[Chosen]:
    """What ``export`` writes: the race's pick first (a study with a finished race), then the best
    distinct trials by search score; or the Pareto front (:func:`select_trials`)."""
    from .search.race import race_pick, race_state, race_summary

    state = race_state(study)
    pick = None if pareto else race_pick(state)
    if pick is None or state is None:
        return [Chosen.of_trial(t) for t in select_trials(study, task, top=top, pareto=pareto)]
    first = Chosen(
        arch=pick.arch,
        number=pick.trial,
        fingerprint=pick.fingerprint,
        search_score=pick.search_score,
        baseline=pick.baseline,
        race=race_summary(state, task),
    )
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    rest = [Chosen.of_trial(t) for t in best_trials(study, task, k=len(done)) if t.number != pick.trial]
    rest = [c for c in rest if c.fingerprint != pick.fingerprint]
    return [first, *rest][:top]


def init_seed(card: dict[str, Any] | None) -> int:
    """The seed of an exported backbone's initial weights: the card's ``init_seed``; a card written
    before it was recorded has its run's ``seed``; without a card, 0.  Always a seed, so that
    ``load`` gives the same weights on every call, never the global random state's."""
    if not card:
        return 0
    seed = card.get("init_seed", card.get("seed", 0))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"the card's init_seed must be an integer, got {seed!r}")
    return seed


def weights_state(card: dict[str, Any]) -> str:
    """TRAINED or UNTRAINED: what an exported folder's card says of its weights (a card written
    before it said so: trained when it has a retraining's results)."""
    return str(card.get("weights", TRAINED if "retrain" in card else UNTRAINED))


def load(path: str | Path, *, weights: bool = True) -> nn.Module:
    """The backbone ``nn.Module`` of an exported architecture (a folder or an ``arch.json``), with
    its trained weights when the folder has them (``weights.pt``, written by ``export --retrain``).
    Without them the weights are the untrained initial ones of the card's ``init_seed``: the same
    on every call, and the ones an untrained export's ``model.onnx`` carries.  Input: see the
    folder's card (``input``)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    arch_path = path / "arch.json" if path.is_dir() else path
    arch = graph.load_json(arch_path)
    card = read_card(folder)
    shape = tuple(card["input"]["shape"]) if card else tuple(arch.graph.get("input_shape", ()))
    if not shape:
        raise DataError(f"{str(folder)!r} has no card.json saying the input shape; pass it to network.build")
    backbone = network.build(arch, shape, seed=init_seed(card))
    if weights and card and weights_state(card) == TRAINED and not (folder / WEIGHTS).is_file():
        raise DataError(
            f"{str(folder / 'card.json')!r} says the trained weights are in {WEIGHTS}, but there is no "
            f"{str(folder / WEIGHTS)!r}; copy it back, or load(..., weights=False) for the untrained ones"
        )
    if weights and (folder / WEIGHTS).is_file():
        state = load_weights(folder / WEIGHTS)
        try:
            backbone.load_state_dict(state["backbone"])
        except RuntimeError as exc:
            raise DataError(
                f"weights {str(folder / WEIGHTS)!r} do not fit {str(arch_path)!r}: {str(exc).splitlines()[0]}"
            ) from None
    return backbone.eval()


def require_onnx() -> None:
    """ConfigError in one line when the optional ONNX exporter's packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"ONNX export needs {' and '.join(missing)}, which are not installed; pip install -e '.[onnx]'"
        )


def export_onnx(module: nn.Module, path: str | Path, input_shape: tuple[int, ...] | None = None) -> Path:
    """Write ``module`` (a backbone: ``(B, *input_shape) -> (B, feature_dim)``) as an ONNX model
    with a dynamic batch dimension (input ``images``, output ``features``).

    BatchNorm keeps its meaning (the statistics of the batch it is given, as the learners use it),
    written with mean and variance ops, so any ONNX runtime computes what ``nas_meta.load`` does.
    The module itself is not changed.  Needs the ``onnx`` extra.
    """
    import copy

    import torch

    from .model.fused import unfused
    from .model.ops import plain_ops

    require_onnx()
    shape: tuple[int, ...] = tuple(input_shape or getattr(module, "input_shape", None) or ())
    if not shape:
        raise ConfigError("export_onnx needs the input shape: pass input_shape=(C, H, W)")
    model = copy.deepcopy(module).eval()
    if isinstance(model, network.Backbone):
        model.fuse(False)  # the fused CPU kernels are autograd Functions, not exportable ops
    param = next(model.parameters(), None)
    example = torch.rand(2, *shape, device=param.device if param is not None else "cpu")
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with plain_ops(), unfused(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress chatter
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["features"],
            dynamic_shapes=({0: batch},),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    assert program is not None
    target = Path(path)
    with output_file(target) as tmp:  # nothing half-written; a full disk names model.onnx
        program.save(str(tmp), external_data=False)
    return target


def read_card(folder: Path) -> dict[str, Any] | None:
    import json

    card = folder / "card.json"
    if not card.is_file():
        return None
    try:
        return json.loads(card.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {str(card)!r}: {exc}") from None


@dataclass
class Exported:
    rank: int
    trial: int | None  # None: a baseline the race picked
    folder: Path
    card: dict[str, Any]


def export_trials(
    study: optuna.Study,
    cfg: RunConfig,
    chosen: list[Chosen],
    out: Path,
    *,
    retrain_them: bool = False,
    onnx: bool = False,
    progress: Any = None,
    log: Any = None,
) -> list[Exported]:
    """Write each chosen architecture's files (and weights and test scores with ``retrain_them``,
    trained on the classes ``cfg.learner.refit`` names: see :func:`retrain`; with ``onnx`` the
    backbone, with its weights when retrained, as ``model.onnx``)."""
    if onnx:
        require_onnx()
    dataset = load_dataset(cfg.data)
    # An export is whole or absent: every rank is written aside first and swapped in at the end,
    # so a stop half-way (Ctrl-C during a retraining, a full disk) leaves the previous export as it
    # was, and a new export never keeps an older one's weights or ranks.  A folder ``out`` made
    # here is removed again when the export fails.
    staging = out / f".staging-{os.getpid()}"
    try:
        with output_folder(out):
            try:
                exported = _write_exports(study, cfg, chosen, staging, dataset, retrain_them, onnx, progress, log)
                _swap_in(staging, out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        # A full disk names the file being written as it would be in ``out``, not in the staging
        # or set-aside folder (both gone by now).
        for hidden in (staging, out / f".old-{os.getpid()}"):
            if exc.filename is not None and Path(exc.filename).is_relative_to(hidden):
                final = out / Path(exc.filename).relative_to(hidden)
                raise OSError(exc.errno, exc.strerror, str(final)) from exc
        raise
    return [dataclasses.replace(e, folder=out / e.folder.name) for e in exported]


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out``'s rank folders by ``staging``'s (the old ones moved aside, then removed).
    When a move fails, the moves done are undone: ``out`` keeps its previous export."""
    old = out / f".old-{os.getpid()}"
    old.mkdir()
    moved: list[tuple[Path, Path]] = []  # (from, to), in the order done
    try:
        for folder in sorted(out.glob("rank[0-9]*")):
            folder.rename(old / folder.name)
            moved.append((folder, old / folder.name))
        for folder in sorted(staging.iterdir()):
            folder.rename(out / folder.name)
            moved.append((folder, out / folder.name))
    except BaseException:
        for source, target in reversed(moved):  # best effort: the error that stopped the swap is the one raised
            with contextlib.suppress(OSError):
                target.rename(source)
        with contextlib.suppress(OSError):
            old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_exports(
    study: optuna.Study,
    cfg: RunConfig,
    chosen: list[Chosen],
    out: Path,
    dataset: Any,
    retrain_them: bool,
    onnx: bool,
    progress: Any,
    log: Any,
) -> list[Exported]:
    task = dataset.task
    exported = []
    for rank, item in enumerate(chosen, start=1):
        arch = graph.from_json(item.arch)
        folder = out / f"rank{rank}"
        folder.mkdir(parents=True, exist_ok=True)
        # Seeded as retrain seeds its model: without --retrain these are the weights model.onnx
        # carries and load() rebuilds from the card's init_seed.
        backbone = network.build(arch, dataset.input_shape, seed=cfg.seed)
        card: dict[str, Any] = {
            "format": "nas_meta.card",
            "version": CARD_VERSION,
            "study": study.study_name,
            "rank": rank,
            "trial": item.number,
            "fingerprint": item.fingerprint,
            "space": cfg.search.space,
            "dataset": cfg.data.dataset,
            "algo": cfg.learner.algo,
            "ways": cfg.data.ways,
            "shots": cfg.data.shots,
            "seed": cfg.seed,
            "preset": cfg.preset,
            "params": network.count_params(backbone),
            "flops": network.count_flops(backbone, dataset.input_shape),
            "feature_dim": backbone.feature_dim,
            "search_score": {
                "metric": "accuracy" if task == "classification" else "mse",
                "split": "val",
                "value": item.search_score,
            },
            "input": input_spec(dataset),
            "recipe": cfg.with_recipe(arch.graph.get("recipe")).recipe(),
            "weights": UNTRAINED,  # "trained" once retrain() has written weights.pt
            "init_seed": cfg.seed,  # the initial weights: network.build(arch, shape, seed=init_seed)
        }
        if arch.graph.get("recipe"):
            card["searched_recipe"] = arch.graph["recipe"]  # the training choices the search drew for it
        skipped = _skipped_recipe(cfg)
        if skipped:
            card["recipe_not_drawn"] = skipped
        if item.baseline is not None:
            card["baseline"] = item.baseline
        if item.race is not None:
            card["race"] = item.race
        if retrain_them:
            if log:
                log(f"retraining rank {rank} ({describe(item)}) with the {cfg.preset} budget")
            learner, result = retrain(cfg, arch, dataset=dataset, progress=progress, log=log)
            save_weights(learner, folder / WEIGHTS)
            card["retrain"] = result
            card["weights"] = TRAINED
            trained = learner.backbone
            assert isinstance(trained, network.Backbone)
            backbone = trained
        if onnx:
            export_onnx(backbone, folder / ONNX, tuple(dataset.input_shape))
            card["onnx"] = {"file": ONNX, "opset": ONNX_OPSET, "input": "images", "output": "features"}
        graph.save_json(arch, folder / "arch.json")
        graph.save_graphml(arch, folder / "arch.graphml")
        from .viz.arch import draw_arch  # matplotlib only when a picture is written

        draw_arch(arch, folder / "arch.png")
        atomic_write_json(folder / "card.json", card)
        atomic_write_text(folder / "README.md", render_card(card))
        exported.append(Exported(rank, item.number, folder, card))
    return exported


def _skipped_recipe(cfg: RunConfig) -> list[str]:
    """Recipe choices the study's space offers that do not apply to its learner (never drawn)."""
    from .errors import SpaceError
    from .spaces import load_space

    try:
        return load_space(cfg.search.space).recipe_skipped(cfg.learner.algo)
    except SpaceError:  # the space file moved or changed since the search: the card just says less
        return []


def describe(item: Chosen) -> str:
    """ "trial #3", "conv4 (baseline)", "trial #3, the race's pick"."""
    what = f"trial #{item.number}" if item.number is not None else f"{item.baseline} (baseline)"
    return what + (", the race's pick" if item.race is not None else "")


def render_card(card: dict[str, Any]) -> str:
    score = card["search_score"]
    pct = score["metric"] == "accuracy"
    fmt = (lambda v: f"{100 * v:.2f}%") if pct else (lambda v: f"{v:.4f}")
    title = f"trial #{card['trial']}" if card["trial"] is not None else f"{card.get('baseline')} (baseline)"
    lines = [
        f"# {card['study']}, rank {card['rank']}: {title}",
        "",
        f"Found by searching `{card['space']}` with `{card['algo']}` on `{card['dataset']}` "
        f"({card['ways']}-way {card['shots']}-shot, preset `{card['preset']}`, seed {card['seed']}).",
        "",
        "| | |",
        "| --- | --- |",
        f"| parameters | {card['params']:,} |",
        f"| FLOPs per image | {card['flops']:,} |",
        f"| feature dimension | {card['feature_dim']} |",
        f"| validation {score['metric']} (search) | "
        + (fmt(score["value"]) if score["value"] is not None else "- (raced, not a trial)")
        + " |",
        f"| fingerprint | `{card['fingerprint']}` |",
    ]
    if "race" in card:
        race = card["race"]
        lines.append(
            f"| the race's pick | {fmt(race['mean'])} over {race['blocks']} training seeds on fresh validation "
            "episodes |"
        )
        lines += [f"| verdict | {text} |" for text in race["verdicts"]]
    if "retrain" in card:
        test = card["retrain"]["test"]
        lines.append(
            f"| test {test['metric']} after retraining | {fmt(test['mean'])} ± {fmt(test['ci95'])} "
            f"(95% CI, {test['episodes']} episodes) |"
        )
        retrained = card["retrain"]
        if "refit" in retrained:
            lines.append(
                f"| weights | refit on train+val classes for {retrained['refit']['steps']} steps "
                "(the validation curve's best checkpoint) |"
            )
        elif "weights_step" in retrained:
            lines.append(
                f"| weights | step {retrained['weights_step']} of {retrained['iterations']} "
                f"({retrained.get('checkpoint', 'last')} validation checkpoint) |"
            )
    if weights_state(card) == UNTRAINED:
        lines.append(
            f"| weights | untrained: the initial weights of seed {init_seed(card)} "
            "(export with `--retrain` to train them) |"
        )
    spec = card["input"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import nas_meta",
        'backbone = nas_meta.load("path/to/this/folder")',
        "features = backbone(x)  # x: (B, " + ", ".join(map(str, spec["shape"])) + f") {spec['dtype']}",
        "```",
        "",
        f"Input: shape {tuple(spec['shape'])}, values {spec['range']}"
        + (f"; {spec['polarity']}." if "polarity" in spec else "."),
        "BatchNorm uses the statistics of the batch it is given (as in MAML), so embed a whole",
        "episode (support and query) or a batch of images at once, not single images.",
        "",
    ]
    return "\n".join(lines)
