"""The tables of ``bench/versus_conv4.py``'s committed rows (``results/records/versus_conv4/``),
as ``results/README.md`` shows them (``RENDERERS``, by name) and ``versus_conv4.py table`` prints
them.  Each renderer returns its markdown lines (none before any row) and the ``name=value``
figures of a bench's last line.
"""

from __future__ import annotations

from typing import Any

from bench.recipe import mean_ci, paired
from bench.records import read_records


def _recipe_cell(row: dict[str, Any]) -> str:
    """The pick against Conv-4 trained with the pick's own training choices (a recipe space's pick)."""
    if "conv4_recipe" not in row:
        return "-"
    d, ci = paired(row["conv4_recipe"]["test"], row["searched"]["test"])
    return f"{100 * d:+.2f} ± {100 * ci:.2f}"


def race_blocks(search: dict[str, Any]) -> dict[str, dict[int, float]]:
    """A row's race as its record keeps it: {entrant: {block: mean score}}."""
    blocks: dict[str, dict[int, float]] = {}
    for key, mean in search["race_scores"].items():
        entrant, _, block = key.partition("/")
        blocks.setdefault(entrant, {})[int(block)] = mean
    return blocks


def common_blocks(blocks: dict[str, dict[int, float]]) -> dict[str, list[float]]:
    """Every entrant's scores over the blocks all of them ran (a dropped entrant ran fewer)."""
    n = min(len(b) for b in blocks.values())
    return {e: [b[i] for i in range(n)] for e, b in blocks.items()}


def _race_cell(row: dict[str, Any]) -> str:
    """What the search's race said of its pick against Conv-4 on validation (rows of the default
    search); when Conv-4 is the pick, the best candidate's difference to it, so that the race's
    verdict can be read against the test difference of the search's best trial."""
    from nas_meta.stats import blocked_differences

    search = row.get("search") or {}
    verdict = search.get("race_verdict")
    if not verdict:
        return "-"
    if verdict.get("blocks"):
        return f"{100 * verdict['difference']:+.2f} ± {100 * verdict['ci95']:.2f}"
    blocks = race_blocks(search)
    diffs = blocked_differences(common_blocks(blocks), "baseline-conv4")
    best = max((e for e in blocks if e != "baseline-conv4"), key=lambda e: diffs[e].mean)
    d = diffs[best]
    return f"Conv-4 is the pick; best candidate #{best.partition('-')[2]} {100 * d.mean:+.2f} ± {100 * d.ci95:.2f}"


def verdict(d: float, ci: float) -> str:
    return "yes" if d - ci > 0 else ("no (worse)" if d + ci < 0 else "no (within CI)")


def render(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, float]]:
    """The full table of ``rows`` (records' figures) and its ``name=value`` figures."""
    lines = [
        "| searched | learner | task | seed | steps | searched test % | Conv-4 test % | difference, paired 95% CI "
        "| beats Conv-4? | race's validation difference (95% CI over its blocks) | against Conv-4 with the pick's "
        "recipe | params (searched / Conv-4) | CPU s (searched / Conv-4) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in rows:
        s, c = mean_ci(r["searched"]["test"]), mean_ci(r["conv4"]["test"])
        d, ci = paired(r["conv4"]["test"], r["searched"]["test"])
        lines.append(
            f"| {r['name']} | {r.get('algo', 'protonet')} | {r['task']} | {r['seed']} | {r['iterations']} | "
            f"{100 * s[0]:.2f} ± "
            f"{100 * s[1]:.2f} | {100 * c[0]:.2f} ± {100 * c[1]:.2f} | {100 * d:+.2f} ± {100 * ci:.2f} | "
            f"{verdict(d, ci)} | {_race_cell(r)} | {_recipe_cell(r)} | "
            f"{r['searched']['params']:,} / {r['conv4']['params']:,} | "
            f"{r['searched']['cpu_s']:.0f} / {r['conv4']['cpu_s']:.0f} |"
        )
        last[f"{r['name']}_{r.get('algo', 'protonet')}_{r['task']}_s{r['seed']}"] = 100 * d
    return (lines if rows else []), last


def committed(prefixes: tuple[str, ...] = ("",)) -> list[dict[str, Any]]:
    """The committed rows whose name starts with one of ``prefixes``."""
    return [r["figures"] for r in read_records("versus_conv4") if r["figures"]["name"].startswith(prefixes)]


def default_table() -> tuple[list[str], dict[str, float]]:
    """The rows of the default search (raced as by default or otherwise) and of its best trials."""
    return render(committed(("default", "best_trial")))


def random_pick_table() -> tuple[list[str], dict[str, float]]:
    """Random search's picks (rows ``random_pick_sS``), one line per training seed."""
    rows = committed(("random_pick_s",))
    lines = [
        "| pick | training seed | pick test % | Conv-4 test % | difference, paired 95% CI |",
        "| --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in sorted(rows, key=lambda r: (r["name"], r["seed"])):
        d, ci = paired(r["conv4"]["test"], r["searched"]["test"])
        search_seed = r["name"].removeprefix("random_pick_s")
        lines.append(
            f"| random search, seed {search_seed} | {r['seed']} | {100 * mean_ci(r['searched']['test'])[0]:.2f} | "
            f"{100 * mean_ci(r['conv4']['test'])[0]:.2f} | {100 * d:+.2f} ± {100 * ci:.2f} |"
        )
        last[f"{r['name']}_t{r['seed']}"] = 100 * d
    return (lines if rows else []), last


def recipe_table() -> tuple[list[str], dict[str, float]]:
    """A recipe space's picks against Conv-4 with the default recipe and with the pick's own, and
    the recipe's own gain to Conv-4 (all paired on the same test episodes)."""
    rows = [r for r in committed(("recipe_",)) if "conv4_recipe" in r]
    lines = [
        "| pick | training seed | pick test % | Conv-4 test % | pick - Conv-4 | Conv-4 with the pick's recipe % "
        "| pick - that | recipe's gain to Conv-4 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in sorted(rows, key=lambda r: (r["name"], r["seed"])):
        pick, conv4, recipe = r["searched"]["test"], r["conv4"]["test"], r["conv4_recipe"]["test"]
        cells = [paired(conv4, pick), paired(recipe, pick), paired(conv4, recipe)]
        lines.append(
            f"| {r['name']} | {r['seed']} | {100 * mean_ci(pick)[0]:.2f} | {100 * mean_ci(conv4)[0]:.2f} | "
            + " | ".join(f"{100 * d:+.2f} ± {100 * ci:.2f}" for d, ci in cells[:1])
            + f" | {100 * mean_ci(recipe)[0]:.2f} | "
            + " | ".join(f"{100 * d:+.2f} ± {100 * ci:.2f}" for d, ci in cells[1:])
            + " |"
        )
        last[f"{r['name']}_s{r['seed']}_vs_recipe"] = 100 * cells[1][0]
    return (lines if rows else []), last


def equal_cpu_table() -> tuple[list[str], dict[str, float]]:
    """A recipe space's picks against Conv-4 trained with the default recipe for longer (rows
    ``conv4_<steps>``, Conv-4 against itself at ``--iterations <steps>``), paired on the same test
    episodes: is the recipe's gain more than the CPU its wider episodes cost?"""
    longer = {(r["seed"], r["task"], r["iterations"]): r for r in committed(("conv4_",))}
    lines = [
        "| pick | training seed | pick's steps | pick test % | pick CPU s | Conv-4 steps | Conv-4 test % "
        "| Conv-4 CPU s | pick - Conv-4, paired 95% CI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in sorted(committed(("recipe_",)), key=lambda r: (r["name"], r["seed"])):
        for (seed, task, steps), c in sorted(longer.items()):
            if (seed, task) != (r["seed"], r["task"]):
                continue
            d, ci = paired(c["conv4"]["test"], r["searched"]["test"])
            lines.append(
                f"| {r['name']} | {seed} | {r['iterations']} | {100 * mean_ci(r['searched']['test'])[0]:.2f} | "
                f"{r['searched']['cpu_s']:.0f} | {steps} | {100 * mean_ci(c['conv4']['test'])[0]:.2f} | "
                f"{c['conv4']['cpu_s']:.0f} | {100 * d:+.2f} ± {100 * ci:.2f} |"
            )
            last[f"{r['name']}_s{seed}_vs_conv4_{steps}"] = 100 * d
    return (lines if len(lines) > 2 else []), last


def _outcome(entrant: str, picked: str | None, d: float, ci: float) -> str:
    """An entrant as a rule's pick, with its test difference to Conv-4 where the row measured it."""
    if entrant == "baseline-conv4":
        return "Conv-4, +0.00"
    if entrant == picked:
        return f"#{entrant.partition('-')[2]}, {100 * d:+.2f} ± {100 * ci:.2f}"
    return f"#{entrant.partition('-')[2]}, not tested"


def race_from_record(search: dict[str, Any], blocks: dict[str, dict[int, float]]) -> dict[str, Any]:
    """The race's state, as ``nas_meta.search.race`` keeps it, from what a row's record kept of it
    (its block means by entrant and who was dropped)."""
    entrants = []
    for key in blocks:
        kind, _, name = key.partition("-")
        trial = int(name) if kind == "trial" else None
        entrants.append(
            {
                "key": key,
                "label": key,
                "arch": {},
                "fingerprint": key,
                "trial": trial,
                "baseline": name if kind == "baseline" else None,
                "search_score": None,
            }
        )
    return {
        "settings": {"blocks": max(len(b) for b in blocks.values())},
        "entrants": entrants,
        "scores": {f"{e}/{i}": {"mean": v} for e, b in blocks.items() for i, v in b.items()},
        "dropped": search.get("dropped", {}),
    }


def race_rules_table() -> tuple[list[str], dict[str, float]]:
    """Every raced row's pick under each race rule, read from the same race (its block scores are in
    the record): "mean" takes the survivor with the best mean, "beats" keeps Conv-4 unless a
    candidate beat it with 95% confidence.  A pick's test difference is known where the row
    retrained it: Conv-4's is zero by construction (the same arm), the row's own pick's is its
    paired difference, another entrant's was not measured."""
    from nas_meta.search.race import pick_by_rule
    from nas_meta.stats import blocked_differences

    lines = [
        "| row | learner | task | seed | race's rule | best mean in the race (validation lead over Conv-4, 95% CI) "
        "| mean rule's pick, test diff. | beats rule's pick, test diff. |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in committed(("default",)):
        search = r.get("search") or {}
        if not search.get("race_scores"):
            continue
        blocks = race_blocks(search)
        state = race_from_record(search, blocks)
        leader, beats_pick = pick_by_rule(state, "mean"), pick_by_rule(state, "beats")
        diffs = blocked_differences(common_blocks(blocks), "baseline-conv4") if leader != "baseline-conv4" else {}
        lead = diffs.get(leader)
        d, ci = paired(r["conv4"]["test"], r["searched"]["test"])
        picked = search.get("pick")
        rule = search.get("settings", {}).get("rule", "mean")
        shown = "Conv-4" if leader == "baseline-conv4" else f"#{leader.partition('-')[2]}"
        if lead is not None:
            shown += f" ({100 * lead.mean:+.2f} ± {100 * lead.ci95:.2f})"
        lines.append(
            f"| {r['name']} | {r.get('algo', 'protonet')} | {r['task']} | {r['seed']} | {rule} | {shown} | "
            f"{_outcome(leader, picked, d, ci)} | {_outcome(beats_pick, picked, d, ci)} |"
        )
        last[f"{r['name']}_{r.get('algo', 'protonet')}_{r['task']}_s{r['seed']}_beats"] = (
            0.0 if beats_pick == "baseline-conv4" else 100 * d
        )
    return (lines if len(lines) > 2 else []), last


# The tables results/README.md shows, by name (bench/results_table.py).
RENDERERS = {
    "default": default_table,
    "random_pick": random_pick_table,
    "recipe": recipe_table,
    "equal_cpu": equal_cpu_table,
    "race_rules": race_rules_table,
}
