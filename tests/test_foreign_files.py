"""Space files and architecture documents in another encoding or with another structure than the
ones nas_meta writes: each loads, or ends as one SpaceError line naming the file (the CLI: exit 2,
no traceback, nothing written)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from nas_meta import graph
from nas_meta.cli import main
from nas_meta.errors import SpaceError
from nas_meta.spaces import base, load_space

CHAIN = "kind: chain\ndepth: [1, 2]\nwidth: 8\ndescription: café au lait\n"


def one_line(info: pytest.ExceptionInfo[SpaceError]) -> str:
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --- encodings ----------------------------------------------------------------------------------

NOT_UTF8 = [
    pytest.param(CHAIN.encode("latin-1"), r"byte 0xe9 on line 4 is not UTF-8", id="latin-1"),
    pytest.param(CHAIN.encode("utf-16"), r"starts with a UTF-16 byte-order mark", id="utf-16"),
    pytest.param(CHAIN.encode("utf-16-be"), r"byte 0xe9 on line 4|NUL bytes", id="utf-16-be"),
    pytest.param(CHAIN.replace("é", "e").encode("utf-16-le"), r"NUL bytes", id="ascii-as-utf-16-le"),
    pytest.param(bytes(range(256)) * 4, r"byte 0x80 on line 2 is not UTF-8", id="binary"),
    pytest.param(b"\xef\xbb\xbf" + CHAIN.encode("latin-1"), r"byte 0xe9 on line 4 is not UTF-8", id="bom+latin-1"),
]


@pytest.mark.parametrize("data, why", NOT_UTF8)
def test_space_file_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, data, why):
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = one_line(info)
    assert message.startswith(f"{path}: not UTF-8 text (") and message.endswith("save it with the UTF-8 encoding")
    assert re.search(why, message), message


def test_space_file_with_a_utf8_bom_loads(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + CHAIN.encode("utf-8"))
    space = load_space(path)
    assert space.description == "café au lait" and space.choices()["depth"] == [1, 2]


@pytest.mark.parametrize("data, why", NOT_UTF8)
def test_architecture_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, data, why):
    path = tmp_path / "arch.json"
    path.write_bytes(data)
    with pytest.raises(SpaceError) as info:
        graph.load_json(path)
    message = one_line(info)
    assert message.startswith(f"{path}: not UTF-8 text (") and message.endswith("save it with the UTF-8 encoding")


def arch_text() -> str:
    arch = load_space("chain").sample(random.Random(0))
    arch.graph["space"] = "café"  # not ASCII, so Latin-1 differs from UTF-8
    return json.dumps(graph.to_json(arch), ensure_ascii=False)  # as an editor saves it


def test_architecture_in_latin1_or_utf16_is_refused_and_with_a_bom_loads(tmp_path):
    text = arch_text()
    for encoding, why in (("latin-1", "byte 0xe9 on line 1"), ("utf-16", "UTF-16 byte-order mark")):
        (tmp_path / "arch.json").write_bytes(text.encode(encoding))
        with pytest.raises(SpaceError, match=why) as info:
            graph.load_json(tmp_path / "arch.json")
        one_line(info)
    (tmp_path / "arch.json").write_bytes(text.encode("utf-8-sig"))
    assert graph.load_json(tmp_path / "arch.json").graph["space"] == "café"


def test_cli_refuses_a_latin1_space_file_in_one_line_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_bytes(CHAIN.encode("latin-1"))
    code = main(["search", "--preset", "smoke", "--results-dir", str(tmp_path / "r"), "--space", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "mine.yaml: not UTF-8 text" in err and not (tmp_path / "r").exists()


# --- structure: values where names are expected -------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: [chain]\ndepth: 2\nwidth: 8\n", r"space.yaml: key 'kind' is \['chain'\]; choose from \['cell'"),
        ("kind: {a: 1}\ndepth: 2\nwidth: 8\n", r"space.yaml: key 'kind' is \{'a': 1\}; choose from \['cell'"),
        ("kind: chain\nname: {a: 1}\ndepth: 2\nwidth: 8\n", r"space.yaml: key 'name' must be a non-empty string"),
        ("kind: chain\nname: [a]\ndepth: 2\nwidth: 8\n", r"space.yaml: key 'name' must be a non-empty string"),
        # Keys of mixed types could not be sorted for the unknown-key message.
        ("kind: chain\ndepth: 2\nwidth: 8\n1: 2\nfoo: 3\n", r"space.yaml: key 1 is not a name \(int\)"),
        ("kind: chain\ndepth: 2\nwidth: 8\n~: 2\n", r"space.yaml: key None is not a name \(NoneType\)"),
        ("kind: chain\ndepth: 2\nwidth: 8\non: 2\n", r"space.yaml: key True is not a name \(bool\)"),
    ],
)
def test_list_or_mapping_where_a_name_is_expected_is_one_line_naming_the_key(tmp_path, text, message):
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(tmp_path / "space.yaml")
    one_line(info)


# --- structure: duplicate keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: chain\ndepth: 2\nwidth: 8\ndepth: 3\n", r"space.yaml: key 'depth' is given twice \(lines 2 and 4\)"),
        ("kind: chain\nkind: mlp\ndepth: 2\nwidth: 8\n", r"space.yaml: key 'kind' is given twice \(lines 1 and 2\)"),
        ("{kind: chain, depth: 2, width: 8, width: 9}\n", r"space.yaml: key 'width' is given twice \(lines 1 and 1\)"),
        (
            "kind: chain\ndepth: 2\nwidth: 8\nrecipe:\n  augment: true\n  augment: false\n",
            r"space.yaml: key 'augment' is given twice \(lines 5 and 6\)",
        ),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key_and_the_file(tmp_path, text, message):
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(tmp_path / "space.yaml")
    one_line(info)


def test_the_space_loader_keeps_safe_load_semantics_otherwise():
    text = (
        "base: &b {x: 1, y: [1, 2]}\n"
        "merged:\n  <<: *b\n  x: 2\n"  # a merge key may be overridden: not a duplicate
        "date: 2024-01-02\nflag: yes\nnothing: ~\nnumber: 0x10\n"
    )
    assert yaml.load(text, Loader=base._space_loader()) == yaml.safe_load(text)
    with pytest.raises(yaml.constructor.ConstructorError):  # code is still refused
        yaml.load("!!python/object/apply:os.system ['true']\n", Loader=base._space_loader())


# --- structure: values PyYAML and json cannot convert, nesting -----------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "kind: chain\ndepth: " + "1" * 5000 + "\nwidth: 8\n",
            r"not valid YAML: cannot read a value: Exceeds the limit",
        ),
        ("kind: chain\ndepth: 2\nwidth: 8\ndescription: 2024-13-45\n", r"cannot read '2024-13-45': month must be"),
        ("kind: chain\ndepth: " + "[" * 5000 + "]" * 5000 + "\n", r"nested too deeply"),
        ("kind: chain\ndepth: 2\nwidth: 8\nrecipe: !!python/name:os.system\n", r"not valid YAML: could not determine"),
    ],
)
def test_values_pyyaml_cannot_convert_are_one_line(tmp_path, text, message):
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(tmp_path / "space.yaml")
    assert one_line(info).startswith(f"{tmp_path / 'space.yaml'}: ")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"[" * 100_000, r"nested too deeply"),
        (b"1" * 5000, r"Exceeds the limit \(4300 digits\)"),
        (b'{"format": "nas_meta.arch", "format": "other"}', r"key 'format' is given twice"),
    ],
)
def test_architecture_json_structure_errors_are_one_line(tmp_path, data, message):
    (tmp_path / "arch.json").write_bytes(data)
    with pytest.raises(SpaceError, match=message) as info:
        graph.load_json(tmp_path / "arch.json")
    assert "arch.json" in one_line(info)


# --- GraphML ---------------------------------------------------------------------------------------


def graphml_text(tmp_path: Path) -> str:
    graph.save_graphml(load_space("chain").sample(random.Random(0)), tmp_path / "ok.graphml")
    return (tmp_path / "ok.graphml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: bytes(range(256)),
        lambda t: t.replace("block1", "blöck1").encode("latin-1"),  # declared utf-8
        lambda t: b"<a><b/></a>",
        lambda t: b"",
        lambda t: t.replace('attr.type="long"', 'attr.type="complex"').encode(),
        lambda t: t.replace(">16<", ">sixteen<").encode(),
        lambda t: t.replace('attr.name="params" attr.type="string"', 'attr.name="params" attr.type="boolean"').encode(),
        lambda t: t.replace("{&quot;", "{{&quot;").replace('{"', '{{"').encode(),  # params not JSON
    ],
)
def test_malformed_graphml_is_one_line_naming_the_file(tmp_path, edit):
    (tmp_path / "arch.graphml").write_bytes(edit(graphml_text(tmp_path)))
    with pytest.raises(SpaceError) as info:
        graph.load_graphml(tmp_path / "arch.graphml")
    assert one_line(info).startswith(str(tmp_path / "arch.graphml"))


def test_an_op_that_is_a_list_is_an_unknown_op_not_a_type_error(tmp_path):
    from nas_meta.model import network
    from nas_meta.spaces import load_known_arch

    doc = graph.to_json(load_known_arch("conv4")[1])
    node = next(n for n in doc["nodes"] if n.get("op", "").startswith("conv"))
    node["op"] = [node["op"]]  # a hand edit: the op's name inside a list
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SpaceError, match="unknown op"):
        network.build(graph.load_json(path), (1, 28, 28))
