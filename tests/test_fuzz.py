"""Generated bad input (hypothesis): architecture JSON documents, YAML space files and the CLI's
numeric options.  Each one either works or ends as one clear user error; never a crash inside
torch or networkx, never a traceback, nothing written."""

from __future__ import annotations

import copy
import json
import random

import networkx as nx
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas_meta import graph
from nas_meta.cli import main
from nas_meta.errors import ConfigError, DataError, SpaceError
from nas_meta.model import network
from nas_meta.model.ops import OPS
from nas_meta.spaces import SPACES_DIR, list_spaces, load_space

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
ops = st.sampled_from(sorted(OPS.names()) + ["none", "conv_99x99", "", "__import__('os')"])
node_ids = st.sampled_from(["input", "a", "b", "c", "out"])


@st.composite
def node_link_docs(draw):
    """Documents near the real format: plausible nodes and edges, with wrong types, unknown ops,
    cycles, disconnected nodes, huge numbers and missing keys mixed in."""
    nodes = []
    for node in draw(st.lists(node_ids, min_size=0, max_size=5, unique=True)):
        attrs = {"id": node, "op": "input" if node == "input" else draw(ops)}
        for key in ("c_out", "stride", "merge"):
            if draw(st.booleans()):
                attrs[key] = draw(
                    st.one_of(
                        st.integers(-2, 16),
                        st.integers(10**5, 10**12),
                        st.sampled_from(["sum", "concat", "mul"]),
                        values,
                    )
                )
        nodes.append(attrs)
    ids = [n["id"] for n in nodes] or ["input"]
    edges = [
        {"source": draw(st.sampled_from(ids)), "target": draw(st.sampled_from(ids))}
        for _ in range(draw(st.integers(0, 6)))
    ]
    doc = {
        "format": "nas_meta.arch",
        "version": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": nodes,
        "edges": edges,
    }
    for key in draw(st.lists(st.sampled_from(list(doc)), max_size=2, unique=True)):
        if draw(st.booleans()):
            del doc[key]
        else:
            doc[key] = draw(values)
    return doc


@FUZZ
@given(doc=st.one_of(node_link_docs(), values))
def test_architecture_documents_load_and_build_or_fail_clearly(doc):
    try:
        arch = graph.from_json(doc)
        backbone = network.build(arch, (1, 8, 8))
    except SpaceError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert backbone.feature_dim >= 1  # a valid document compiles to a working backbone


space_keys = {
    "cell": ["ops", "nodes", "layout", "channels", "stem_channels", "stem_stride"],
    "chain": ["depth", "width", "kernel", "pool", "skip", "norm", "activation"],
    "mlp": ["depth", "width", "activation"],
}


@st.composite
def space_docs(draw):
    kind = draw(st.sampled_from(["cell", "chain", "mlp", "cell", "chain", "resnet", 3, None]))
    doc = {"kind": kind}
    keys = space_keys.get(kind, ["depth"]) + ["name", "description", "unknown_key"]
    for key in draw(st.lists(st.sampled_from(keys), max_size=6, unique=True)):
        doc[key] = draw(
            st.one_of(
                values, st.lists(st.integers(-3, 5000), max_size=3), st.lists(ops, max_size=4), st.integers(-5, 10**9)
            )
        )
    return draw(st.one_of(st.just(doc), values))


@FUZZ
@given(doc=space_docs())
def test_space_files_load_or_fail_with_one_line_naming_the_file(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fuzz") / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        space = load_space(path)
    except SpaceError as exc:
        assert "\n" not in str(exc)
        return
    assert space.size() >= 1 and isinstance(space.choices(), dict)


@st.composite
def shrinking_spaces(draw):
    """Cell spaces that halve the map many times, on small images: maps of 1x1 and below."""
    doc = {
        "kind": "cell",
        "ops": draw(
            st.lists(
                st.sampled_from(["max_pool_3x3", "skip_connect", "sep_conv_3x3", "none"]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        ),
        "nodes": draw(st.integers(1, 2)),
        "layout": draw(st.lists(st.sampled_from(["normal", "reduce", "reduce"]), min_size=1, max_size=7)),
        "channels": draw(st.integers(1, 4)),
        "stem_channels": draw(st.integers(1, 4)),
        "stem_stride": draw(st.integers(1, 2)),
    }
    return doc, draw(st.integers(4, 12)), draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=shrinking_spaces())
def test_spaces_that_shrink_the_map_away_build_and_count_or_fail_as_space_errors(tmp_path_factory, case):
    doc, side, seed = case
    path = tmp_path_factory.mktemp("fuzz") / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        arch = load_space(path).sample(random.Random(seed))
        backbone = network.build(arch, (1, side, side), seed=0)
    except SpaceError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    # What a trial does next: count its FLOPs, then train on a batch (the smallest has 2 examples).
    assert network.count_flops(backbone, (1, side, side)) >= 0
    out = backbone(torch.randn(2, 1, side, side))
    assert out.shape == (2, backbone.feature_dim)
    if out.requires_grad:
        out.square().mean().backward()


# --- files in another encoding or with another structure ---------------------------------------------
#
# The cases above write YAML only through safe_dump, as valid UTF-8, with hashable kinds.  Below:
# bytes that are not UTF-8, lists and mappings in every scalar position of the shipped space files,
# duplicated lines, and arbitrary edits of real architecture documents.

FILE_ERRORS = (SpaceError, ConfigError, DataError)
SHIPPED = {name: yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text(encoding="utf-8")) for name in list_spaces()}
containers = st.one_of(
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    st.just([]),
    st.just({}),
    st.lists(st.lists(scalars, max_size=2), min_size=1, max_size=2),
)


@st.composite
def scalars_replaced(draw, value):
    """``value`` with any of its scalars (mapping values, list items, at any depth) replaced by a
    list or a mapping; mapping keys are kept (YAML keys of a space file are names)."""
    if isinstance(value, dict):
        return {k: draw(scalars_replaced(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [draw(scalars_replaced(v)) for v in value]
    return draw(containers) if draw(st.integers(0, 3)) == 0 else value


@st.composite
def shipped_space_docs(draw):
    """A shipped space file (every key, a recipe block too) with lists and mappings where scalars go."""
    doc = dict(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    doc.setdefault("name", "fuzzed")
    return draw(scalars_replaced(doc))


def load_space_bytes(path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        space = load_space(path)
    except FILE_ERRORS as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert space.size() >= 1 and isinstance(space.choices(), dict)


@FUZZ
@given(doc=shipped_space_docs())
def test_lists_and_mappings_in_any_scalar_position_load_or_fail_with_one_line(tmp_path_factory, doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    load_space_bytes(tmp_path_factory.mktemp("fuzz") / "space.yaml", text.encode("utf-8"))


ENCODINGS = ["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig", "utf-8"]


@st.composite
def foreign_bytes(draw, text: str):
    """``text`` as bytes that are mostly not UTF-8: another encoding, random bytes spliced in, a
    truncated multi-byte character, a duplicated line, or plain garbage."""
    how = draw(st.sampled_from(["encoding", "splice", "truncate", "duplicate", "garbage"]))
    if how == "garbage":
        return draw(st.binary(max_size=300))
    if how == "encoding":
        return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    data = text.encode("utf-8")
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    if how == "truncate":
        return data + "é".encode()[:1]
    lines = text.splitlines(keepends=True) or [""]
    line = draw(st.sampled_from(lines))
    return (text + line).encode("utf-8")


@st.composite
def space_file_bytes(draw):
    doc = dict(draw(st.one_of(shipped_space_docs(), st.sampled_from(list(SHIPPED.values())))))
    doc["description"] = "café " + draw(st.text(max_size=6))  # not ASCII: other encodings differ from UTF-8
    return draw(foreign_bytes(yaml.safe_dump(doc, allow_unicode=True)))


@FUZZ
@given(data=space_file_bytes())
def test_space_files_not_utf8_or_with_duplicate_lines_load_or_fail_with_one_line(tmp_path_factory, data):
    load_space_bytes(tmp_path_factory.mktemp("fuzz") / "space.yaml", data)


def sample_arch(name: str, seed: int) -> dict:
    arch = load_space(name).sample(random.Random(seed))
    arch.graph["space"] = f"{name} café"  # not ASCII: other encodings differ from UTF-8
    return graph.to_json(arch)


ARCHS = [sample_arch(name, seed) for seed, name in enumerate(sorted(SHIPPED))]


def positions(doc, where=()):
    """Every (container, key or index) in a JSON document, at any depth."""
    found = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append(where + (key,))
        found += positions(value, where + (key,))
    return found


@st.composite
def edited_arch_docs(draw):
    """A real architecture document with up to 4 keys or items removed, or their values replaced
    by a value of another type (anywhere: the header, graph attributes, nodes, edges)."""
    doc = copy.deepcopy(draw(st.sampled_from(ARCHS)))
    for _ in range(draw(st.integers(1, 4))):
        spots = positions(doc)
        if not spots:
            break
        path = draw(st.sampled_from(spots))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        old = parent[path[-1]]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(st.one_of(values, containers).filter(lambda v, old=old: type(v) is not type(old)))
    return doc


@FUZZ
@given(doc=edited_arch_docs(), encoding=st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "ascii-escaped"]))
def test_edited_architecture_documents_load_or_fail_with_one_line(tmp_path_factory, doc, encoding):
    text = json.dumps(doc, ensure_ascii=encoding == "ascii-escaped", allow_nan=True)
    loads_or_fails_in_one_line(tmp_path_factory, text.encode("utf-8-sig" if encoding == "utf-8-sig" else "utf-8"))


def loads_or_fails_in_one_line(tmp_path_factory, data: bytes) -> None:
    """An arch.json of these bytes loads as a graph, or fails with one line naming the file."""
    path = tmp_path_factory.mktemp("fuzz") / "arch.json"
    path.write_bytes(data)
    try:
        arch = graph.load_json(path)
    except FILE_ERRORS as exc:
        assert "\n" not in str(exc) and str(exc) and "arch.json" in str(exc)
        return
    assert isinstance(arch, nx.DiGraph)


@FUZZ
@given(data=st.sampled_from(ARCHS).flatmap(lambda doc: foreign_bytes(json.dumps(doc, ensure_ascii=False))))
def test_architecture_documents_not_utf8_load_or_fail_with_one_line(tmp_path_factory, data):
    loads_or_fails_in_one_line(tmp_path_factory, data)


numeric = st.sampled_from(["--ways", "--shots", "--queries", "--trials", "--iterations", "--meta-batch", "--n-workers"])


@FUZZ
@given(
    option=numeric,
    value=st.one_of(
        st.integers(max_value=0), st.text(max_size=6).filter(lambda s: not s.strip().lstrip("+-").isdigit())
    ),
)
def test_bad_numeric_options_are_one_line_exit_2_nothing_written(tmp_path_factory, capsys, option, value):
    root = tmp_path_factory.mktemp("cli")
    code = main(
        [
            "search",
            "--preset",
            "smoke",
            "--space",
            "mlp",
            "--dataset",
            "sinusoid",
            option,
            str(value),
            "--results-dir",
            str(root / "r"),
            "--cache-dir",
            str(root / "c"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (root / "r").exists()


@FUZZ
@given(option=st.sampled_from(["--ways", "--shots", "--queries"]), value=st.integers(10**3, 10**12))
def test_huge_episode_sizes_are_refused_before_training(tmp_path_factory, capsys, option, value):
    root = tmp_path_factory.mktemp("cli")
    cache = tmp_path_factory.getbasetemp() / "glyph-cache"  # generated once, shared by the cases
    code = main(
        [
            "search",
            "--preset",
            "smoke",
            "--space",
            "chain",
            option,
            str(value),
            "--results-dir",
            str(root / "r"),
            "--cache-dir",
            str(cache),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and option.strip("-") in err
    assert not (root / "r").exists()


def test_a_space_file_whose_aliases_expand_to_millions_of_values_is_refused_when_read(tmp_path):
    lines = ["kind: chain", "depth: [1, 2]", "description:", "  - &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, previous in zip("bcdef", "abcde", strict=True):  # 10^6 values in 6 lines (a regression stays cheap)
        lines.append(f"  - &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    try:
        load_space(path)
    except SpaceError as exc:
        assert (
            str(exc)
            == f"{path}: not valid YAML: expands to more than 100,000 values through its aliases (line 1, column 1)"
        )
    else:
        raise AssertionError("the file was read")
    # Aliases that stay small are YAML like any other.
    path.write_text("kind: chain\ndepth: &d [1, 2]\nwidth: [16, 32]\ndescription: an alias\nkernel: [3]\n")
    assert load_space(path).name == "laughs"
