"""ONNX export: a found backbone as a model that needs neither nas_meta nor torch to run."""

from __future__ import annotations

import importlib.util
import io
import json
import random

import numpy as np
import pytest
import torch

import nas_meta
from nas_meta import graph
from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.model import network
from nas_meta.search.runner import run_search
from nas_meta.spaces import load_space

ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install -e '.[onnx]'")

SHAPE = (1, 28, 28)


def exported_folder(tmp_path, space: str):
    """An export folder as `export` writes it (arch.json, card.json, weights.pt), weights random."""
    arch = load_space(space).sample(random.Random(3))
    folder = tmp_path / space
    folder.mkdir()
    graph.save_json(arch, folder / "arch.json")
    (folder / "card.json").write_text(json.dumps({"input": {"shape": list(SHAPE)}}))
    backbone = network.build(arch, SHAPE, seed=7)
    with torch.no_grad():  # BatchNorm scales of both signs, so every branch of the graph matters
        for name, p in backbone.named_parameters():
            if name.endswith("weight") and p.dim() == 1:
                p.copy_(torch.randn_like(p))
    torch.save({"backbone": backbone.state_dict()}, folder / "weights.pt")
    return folder


@pytest.mark.parametrize("space", ["conv4", "cell", "chain"])
def test_onnxruntime_computes_what_load_does_at_any_batch_size(tmp_path, space):
    folder = exported_folder(tmp_path, space)
    loaded = nas_meta.load(folder)
    path = nas_meta.export_onnx(loaded, folder / "model.onnx", SHAPE)
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["images"]
    for batch in (1, 7):
        x = torch.rand(batch, *SHAPE, generator=torch.Generator().manual_seed(batch))
        want = loaded(x).detach().numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (batch, loaded.feature_dim)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # BatchNorm uses the batch's own statistics in the exported model too: a batch's features
    # depend on the other images in it (the learners' meaning), not on stored running means.
    x = torch.rand(7, *SHAPE)
    alone = session.run(None, {"images": x[:3].numpy()})[0]
    together = session.run(None, {"images": x.numpy()})[0][:3]
    assert np.abs(alone - together).max() > 1e-3


def test_export_onnx_writes_model_onnx_beside_the_weights(tmp_path):
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": "x", "trials": 1},
        results_dir=str(tmp_path / "results"),
    )
    run_search(cfg, stream=io.StringIO())
    argv = ["export", "--study", "x", "--results-dir", str(tmp_path / "results"), "--retrain", "--onnx"]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 0
    folder = tmp_path / "results" / "x" / "export" / "rank1"
    card = json.loads((folder / "card.json").read_text())
    assert card["onnx"] == {"file": "model.onnx", "opset": 18, "input": "images", "output": "features"}
    loaded = nas_meta.load(folder)  # the retrained weights
    x = torch.rand(5, *SHAPE)
    got = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, loaded(x).detach().numpy(), atol=1e-4, rtol=0)


def test_without_the_extra_export_onnx_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    out = tmp_path / "out"
    code = main(["export", "--study", "nope", "--results-dir", str(tmp_path), "--onnx", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[onnx]'" in err[0] and "onnxscript" in err[0]
    assert not out.exists()


def test_an_untrained_onnx_export_says_so_and_load_gives_its_weights(tmp_path, capsys):
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": "u", "trials": 1},
        results_dir=str(tmp_path / "results"),
        seed=5,
    )
    run_search(cfg, stream=io.StringIO())
    capsys.readouterr()
    argv = ["export", "--study", "u", "--results-dir", str(tmp_path / "results"), "--onnx"]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err
    assert "model.onnx carries untrained weights" in err and "init_seed 5" in err and "--retrain" in err
    folder = tmp_path / "results" / "u" / "export" / "rank1"
    card = json.loads((folder / "card.json").read_text())
    assert card["weights"] == "untrained" and card["init_seed"] == 5
    assert not (folder / "weights.pt").exists()
    # load() rebuilds the same weights on every call, whatever the global random state: the ONNX model's.
    torch.manual_seed(1)
    first = nas_meta.load(folder)
    torch.manual_seed(2)
    second = nas_meta.load(folder)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    x = torch.rand(6, *SHAPE)
    got = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, first(x).detach().numpy(), atol=1e-4, rtol=0)
