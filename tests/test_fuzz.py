"""Generated bad input (hypothesis): architecture JSON documents, YAML space files and the CLI's
numeric options.  Each one either works or ends as one clear user error; never a crash inside
torch or networkx, never a traceback, nothing written."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas_meta import graph
from nas_meta.cli import main
from nas_meta.errors import SpaceError
from nas_meta.model import network
from nas_meta.model.ops import OPS
from nas_meta.spaces import load_space

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
