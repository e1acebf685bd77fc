"""The dashboard users already have: optuna-dashboard on a nas_meta study, and the study as plain Optuna."""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.search.runner import run_search


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(root / "cache")},
        search={"space": "chain", "study": "d", "trials": 3, "prescreen": "params", "prescreen_pool": 2},
        results_dir=str(root / "results"),
    )
    outcome = run_search(cfg, stream=io.StringIO())
    return root, outcome.storage


def test_plain_optuna_reads_every_trial_without_nas_meta(study):
    root, storage = study
    script = textwrap.dedent(
        f"""
        import json, sys
        import optuna
        study = optuna.load_study(study_name="d", storage={storage!r})
        out = {{"study": json.dumps(study.user_attrs), "trials": []}}
        for t in study.trials:
            out["trials"].append({{"state": t.state.name, "params": t.params, "attrs": json.dumps(t.user_attrs)}})
        assert "nas_meta" not in sys.modules
        print(json.dumps(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert "nas_meta:config" in json.loads(doc["study"])
    states = [t["state"] for t in doc["trials"]]
    assert states.count("COMPLETE") == 3 and "PRUNED" in states  # the screened-out candidates too
    for trial in doc["trials"]:
        attrs = json.loads(trial["attrs"])
        assert trial["params"], trial  # every trial shows its choices
        assert "arch" in attrs and "fingerprint" in attrs
        if trial["state"] == "COMPLETE":
            assert attrs["curve"] and all(len(point) == 2 for point in attrs["curve"])  # (step, val) pairs
        if trial["state"] == "PRUNED":
            assert attrs["screening"]["proxy"] == "params"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None, reason="the dashboard extra")
def test_dashboard_serves_the_study(study):
    root, _ = study
    port = _free_port()
    argv = [sys.executable, "-m", "nas_meta", "dashboard", "--study", "d", "--results-dir", str(root / "results")]
    server = subprocess.Popen([*argv, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    body = json.loads(response.read())
            except OSError:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                time.sleep(0.5)
        assert body is not None, "the dashboard did not answer"
        assert [s["study_name"] for s in body["study_summaries"]] == ["d"], body
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dashboard_without_the_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna_dashboard" else real(name, *a)
    )
    assert main(["dashboard", "--study", "d", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "nas-meta: error: dashboard needs optuna-dashboard, which is not installed; pip install -e '.[dashboard]'"
    ]


def test_a_port_in_use_or_a_host_that_does_not_resolve_is_one_line(study, capsys):
    root, storage = study
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", "--study", "d", "--storage", storage, "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        why = "Address already in use; choose another --port or --host"
        assert err == [f"nas-meta: error: cannot serve on 127.0.0.1:{port}: {why}"]
    assert main(["dashboard", "--study", "d", "--storage", storage, "--host", "no-such-host.invalid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas-meta: error: --host 'no-such-host.invalid' does not resolve"), err
