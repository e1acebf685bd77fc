"""bench/results_table.py: results/README.md is what the committed prose and records generate."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))  # the repository: bench is its package
    return importlib.import_module("bench.results_table")


@pytest.fixture
def copy(table: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A copy of the committed prose, records and README that the module reads instead."""
    results = tmp_path / "results"
    for part in ("prose", "records"):
        shutil.copytree(REPO / "results" / part, results / part)
    shutil.copy(REPO / "results" / "README.md", results / "README.md")
    monkeypatch.setattr(importlib.import_module("bench.records"), "ROOT", results / "records")
    monkeypatch.setattr(table, "PROSE", results / "prose")
    monkeypatch.setattr(table, "README", results / "README.md")
    return results


def test_the_committed_readme_is_what_the_records_generate(table: ModuleType) -> None:
    diff = table.check()
    assert diff == [], "results/README.md is stale: run `python -m bench.results_table --write`\n" + "".join(diff[:40])


def test_a_changed_record_makes_the_readme_stale_and_shows_the_new_figure(table: ModuleType, copy: Path) -> None:
    assert table.check(copy / "README.md") == []
    path = copy / "records" / "reproduce" / "conv4-protonet-5w1s.json"
    record = json.loads(path.read_text())
    record["figures"]["result"]["mean"] = 0.5
    path.write_text(json.dumps(record))
    added = [line for line in table.check(copy / "README.md") if line.startswith("+") and "50.00 ±" in line]
    # The baseline row, and the searches' Conv-4 column of both ProtoNet rows it is the baseline of.
    assert len(added) == 3 and "`conv4-protonet-5w1s` (transcribed)" in added[0]


def test_an_edited_readme_is_stale(table: ModuleType, copy: Path) -> None:
    readme = copy / "README.md"
    readme.write_text(readme.read_text().replace("83.93 ± 0.91", "93.93 ± 0.91", 1))
    diff = table.check(readme)
    assert "-| protonet | 5-way 1-shot | 93.93 ± 0.91 |" in "".join(diff)
    assert table.main(["--check"]) == 1  # the module's README is the copy


def test_transcribed_tables_are_marked_and_measured_rows_are_not(table: ModuleType, copy: Path) -> None:
    text = table.render()
    n_transcribed = len(list((copy / "records").glob("*/transcribed/*.json")))
    assert text.count("*Transcribed: these rows' raw results were lost") == n_transcribed > 0
    # A versus-Conv-4 row measured since records were kept: its table has no mark.
    default_rows = [line for line in text.splitlines() if line.startswith("| default | fomaml | 5w1s | 0 |")]
    assert default_rows and "transcribed" not in default_rows[0]


def test_a_placeholder_for_an_unknown_table_is_an_error(table: ModuleType, copy: Path) -> None:
    (copy / "prose" / "7-published.md").write_text("## 7. x\n\n{{table no_such_table}}\n")
    with pytest.raises(KeyError, match="no_such_table"):
        table.render()


def test_a_reproduce_row_becomes_a_record_with_generic_folders(table: ModuleType, copy: Path, tmp_path: Path) -> None:
    out, omniglot = tmp_path / "out", tmp_path / "omni"
    (out / "search-protonet-chain" / "export-long" / "rank1").mkdir(parents=True)
    retrained = {"test": {"metric": "accuracy", "mean": 0.9, "ci95": 0.01}}
    (out / "search-protonet-chain" / "export-long" / "rank1" / "card.json").write_text(
        json.dumps({"params": 1234, "space": "chain", "retrain": retrained})
    )
    (out / "row-a.log").write_text(
        "row: row-a\nseed: 3\n"
        "command: /x/.venv/bin/python /x/cli.py export --study s --retrain "
        f"--out {out}/search-protonet-chain/export-long --data-root {omniglot}\n"
        "cpu: Test CPU; avx512f; 2 cores\n"
        "test accuracy 85.00% ± 1.00\n"
        "cpu_seconds: 42\nwall_seconds: 50\n"
    )
    path = table.record_row(out, "row-a", str(omniglot))
    record = json.loads(path.read_text())
    assert record["command"] == (
        "python cli.py export --study s --retrain --out OUT/search-protonet-chain/export-long --data-root OMNIGLOT_ROOT"
    )
    assert (record["seed"], record["cpu_seconds"], record["source"]) == (3, 42.0, "measured")
    figures = record["figures"]
    # The export card's retrained test result wins over the log's last result line.
    assert figures["result"] == {"metric": "accuracy", "mean": 0.9, "ci": 0.01}
    assert (figures["params"], figures["space"], figures["wall_seconds"]) == (1234, "chain", 50)
    rows = table.reproduce_rows()
    assert rows["row-a"]["source"] == "measured" and rows["row-a"]["seed"] == 3
    assert "| `row-a` | 3 | 42 | 50 | `python cli.py export" in "\n".join(table.commands_table())


def test_an_unfinished_reproduce_row_is_refused_in_one_line(
    table: ModuleType, copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "row-b.log").write_text("row: row-b\nseed: 0\ncommand: python cli.py evaluate conv4\n")
    assert table.main(["record", str(tmp_path), "row-b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row-b" in err
    assert not (copy / "records" / "reproduce" / "row-b.json").exists()


def test_fidelity_rows_are_read_back_from_their_records_without_the_results_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    fidelity = importlib.import_module("bench.fidelity")
    monkeypatch.setattr(importlib.import_module("bench.records"), "ROOT", tmp_path / "records")
    folder = tmp_path / "fidelity_bf16" / "chain-protonet-5w1s-bf16"
    folder.mkdir(parents=True)
    for index in (1, 0):
        doc = {"index": index, "seed": 0, "cpu_s": 2.0, "command": "c", "folder": folder.name}
        doc["reference"] = {"score": 0.5 + index / 10}
        fidelity.keep(folder / f"{index:03d}.json", doc)
    other = {"index": 0, "seed": 0, "cpu_s": 1.0, "command": "c", "folder": "cell-protonet-5w1s"}
    fidelity.keep(tmp_path / "fidelity_bf16" / "cell-protonet-5w1s" / "000.json", other)
    record = json.loads((tmp_path / "records" / "fidelity_bf16" / "chain-protonet-5w1s-bf16-001.json").read_text())
    assert record["figures"]["reference"] == {"score": 0.6} and record["cpu_seconds"] == 2.0
    shutil.rmtree(tmp_path / "fidelity_bf16")  # another machine: only the committed records
    loaded = fidelity.load(folder)
    assert [doc["index"] for doc in loaded] == [0, 1]  # this folder's rows only, in order


def test_a_recipe_pick_is_paired_with_conv4_trained_longer_on_the_same_episodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    versus = importlib.import_module("bench.versus_tables")
    records = importlib.import_module("bench.records")
    monkeypatch.setattr(records, "ROOT", tmp_path / "records")

    def arm(test: list[float], cpu: float) -> dict:
        return {"test": test, "cpu_s": cpu, "params": 1}

    def save(name: str, seed: int, steps: int, searched: list[float], conv4: list[float]) -> None:
        doc = {"name": name, "seed": seed, "task": "5w1s", "iterations": steps}
        doc |= {"searched": arm(searched, 200.0), "conv4": arm(conv4, 50.0 * steps / 600)}
        records.write_record("versus_conv4", f"{name}-s{seed}", doc, command="c", seed=seed, cpu_seconds=1.0)

    save("recipe_x", 0, 600, [1.0, 0.8, 0.6, 1.0], [0.0, 0.0, 0.0, 0.0])
    save("conv4_2400", 0, 2400, [0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6])
    save("conv4_2400", 1, 2400, [0.5] * 4, [0.5] * 4)  # no pick of this seed: not paired
    lines, last = versus.equal_cpu_table()
    assert len(lines) == 3
    # pick - Conv-4 at 2400 steps, episode by episode: +0.1, 0, -0.1, +0.4.
    assert lines[2].startswith("| recipe_x | 0 | 600 | 85.00 | 200 | 2400 | 75.00 | 200 | +10.00 ± ")
    assert last == {"recipe_x_s0_vs_conv4_2400": pytest.approx(10.0)}


def test_each_race_rule_is_read_off_the_same_race(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    versus = importlib.import_module("bench.versus_tables")
    records = importlib.import_module("bench.records")
    monkeypatch.setattr(records, "ROOT", tmp_path / "records")

    def save(seed: int, scores: dict[str, list[float]], pick: str) -> None:
        race = {f"{e}/{b}": v for e, vs in scores.items() for b, v in enumerate(vs)}
        doc = {"name": "default", "algo": "protonet", "seed": seed, "task": "5w1s", "iterations": 600}
        doc["search"] = {"race_scores": race, "pick": pick, "dropped": {}, "settings": {}}
        doc["searched"] = {"test": [0.7, 0.8, 0.9, 0.8], "cpu_s": 1.0, "params": 1}
        doc["conv4"] = {"test": [0.6, 0.6, 0.6, 0.6], "cpu_s": 1.0, "params": 1}
        records.write_record("versus_conv4", f"default-s{seed}", doc, command="c", seed=seed, cpu_seconds=1.0)

    save(0, {"trial-3": [0.80, 0.60], "baseline-conv4": [0.65, 0.66]}, "trial-3")  # a lead within the noise
    save(1, {"trial-4": [0.80, 0.81, 0.79], "baseline-conv4": [0.60, 0.62, 0.61]}, "trial-4")  # a clear lead
    lines, last = versus.race_rules_table()
    row0, row1 = lines[2].split(" | "), lines[3].split(" | ")
    # Seed 0: the mean rule takes #3 (tested: +20 points), the beats rule keeps Conv-4.
    assert row0[5].startswith("#3 (+4.50 ± ") and row0[6].startswith("#3, +20.00 ± ") and row0[7] == "Conv-4, +0.00 |"
    # Seed 1: #4 beats Conv-4 with confidence: both rules take it.
    assert row1[5].startswith("#4 (+19.00 ± ") and row1[6].startswith("#4, +20.00") and row1[7].startswith("#4, +20.00")
    assert last == {"default_protonet_5w1s_s0_beats": 0.0, "default_protonet_5w1s_s1_beats": pytest.approx(20.0)}


def test_a_row_counts_each_training_it_ran_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    versus = importlib.import_module("bench.versus_conv4")
    conv4 = {"cpu_s": 2.0}
    assert versus.arms_cpu({"searched": conv4, "conv4": conv4}) == 2.0  # Conv-4 against itself
    assert versus.arms_cpu({"searched": {"cpu_s": 1.0}, "conv4": conv4, "conv4_recipe": {"cpu_s": 3.0}}) == 6.0
