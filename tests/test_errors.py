"""Bad specs are the normal case: every problem is a SpecError at file:line:col, rendered with
the source line and a caret, quickly, and nothing else ever escapes.

In the specs below, `§` marks where the error must point; it is removed before parsing.
"""

import os
import textwrap
import time

import pytest

from cliquegraph import SpecError, elaborate, parse, parse_file
from cliquegraph.errors import did_you_mean
from conftest import SPECS

MARK = "§"


def write(folder, text, name="bad.clq"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def check_rendering(err, path, line, col, source):
    """str(err) is `path:line:col: error: message`, then the source line, then a caret."""
    rendered = str(err).split("\n")
    assert rendered[0] == f"{path}:{line}:{col}: error: {err.message}"
    gutter = f"{line:>5} | "
    assert rendered[1] == gutter + source.expandtabs(1)
    assert rendered[2].rstrip().endswith("^")
    assert rendered[2].index("^") == len(gutter) + col - 1
    assert rendered[2].startswith(" " * (len(gutter) - 2) + "| ")
    if err.hint:
        assert rendered[3] == f"hint: {err.hint}"


def error_at(tmp_path, marked, overrides=None, name="bad.clq"):
    """The SpecError that elaborating `marked` raises; it must point at the §."""
    marked = textwrap.dedent(marked)
    at = marked.index(MARK)
    text = marked.replace(MARK, "", 1)
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    path = write(tmp_path, text, name)
    with pytest.raises(SpecError) as info:
        elaborate(path, overrides)
    err = info.value
    assert (err.file, err.line, err.column) == (str(path), line, col), str(err)
    check_rendering(err, path, line, col, text.split("\n")[line - 1])
    return err


def cases(*rows):
    """pytest params named by their expected message."""
    return [pytest.param(*row, id=row[1]) for row in rows]


def network(blocks="layers 3; width 4", params="", stem="conv 3x3 16", head="pool global; fc 10",
            input="3x32x32", count="2", transition="conv 1x1 C; pool avg 2"):
    return (f"network n {{\n  {params}\n  input {input}\n  stem {{ {stem} }}\n"
            f"  blocks {count} {{ {blocks} }}\n  transition {{ {transition} }}\n"
            f"  head {{ {head} }}\n}}\n")


# ---- unknown names --------------------------------------------------------------------------

@pytest.mark.parametrize("marked,message,hint", cases(
    (network(params="param k = 4", blocks="layers 3; width §kk"), "unknown name 'kk'", "'k'"),
    (network(blocks="layers 3; width 4; topology §cliqe"), "unknown name 'cliqe'", "'clique'"),
    (network(blocks="layers 3; width 4; bn §sharde"), "unknown name 'sharde'", "'shared'"),
    (network(blocks="layers 3; width §flor(4.5)"), "unknown function 'flor'", "'floor'"),
    (network(blocks="layers 3; width 4; §layer 3"), "unexpected 'layer'", "'layers'"),
    (network(blocks="layers 3; width 4; topology watts_strogatz(§kk = 2, p = 0.1)"),
     "watts_strogatz() has no argument 'kk'", "'k'"),
    (network(head="pool §avgg 2"), "unknown pooling 'avgg'", "'avg'"),
    ("§netwrk n {}", "unexpected 'netwrk'", "'network'"),
))
def test_unknown_names_say_what_was_meant(tmp_path, marked, message, hint):
    err = error_at(tmp_path, marked)
    assert err.message == message
    assert "did you mean" in err.hint and hint in err.hint


def test_extends_an_unknown_network(tmp_path):
    err = error_at(tmp_path, "network base { }\n§network n extends bsae { }\n")
    assert "extends unknown network 'bsae'" in err.message and "'base'" in err.hint


# ---- type errors and bad values -------------------------------------------------------------

@pytest.mark.parametrize("marked,message", cases(
    (network(params="param a = 1 + §true"), "`+` needs a number, got a bool (true)"),
    (network(params="param a = §x0 * 2"), "`*` needs a number, got a feature policy (x0)"),
    (network(params="param a = not §3"), "`not` needs true or false, got an integer (3)"),
    (network(params="param a = if §[1] then 1 else 2"), "`if` needs true or false"),
    (network(params="param a = true and §1"), "`and` needs true or false"),
    (network(params="param a = §len(3)"), "len() takes one list"),
    (network(params="param a = 1 / §0"), "division by zero"),
    (network(params="param a = 7 % (§1 - 1)"), "division by zero"),
    (network(blocks="layers 3; width §2.5"), "width must be a whole number, got 2.5"),
    (network(blocks="layers §true; width 4"), "layers must be a whole number, got true"),
    (network(blocks="layers 3; width 4; feature §clique"), "feature is made of x0"),
    (network(blocks="layers 3; width 4; dropout §1.5"), "dropout is a probability"),
    (network(blocks="layers 3; width 4; bn §3"), "bn is per_stage or shared"),
    (network(blocks="layers 3; width 4; topology §3"), "unknown topology 3"),
    (network(blocks="layers 3; width 4; topology erdos_renyi(p = §2)"), "p is a probability"),
    (network(input="§3x32"), "input must be CxHxW"),
    (network(stem="conv §3x3x3 16"), "kernel must be N or NxM"),
    (network(head="§fc 10; pool global"), "fc needs a vector: put `pool global` or `flatten`"),
    (network(head="pool global; §conv 1x1 4"), "conv needs a feature map"),
    (network(head="flatten; §pool max 2; fc 4"), "a `pool global` or `flatten` before it"),
    (network(stem="§scales all"), "`scales` belongs in the head"),
    (network(head="bn; pool global; §scales clique"), "scales is all, last or a list"),
))
def test_type_errors(tmp_path, marked, message):
    assert message in error_at(tmp_path, marked).message


@pytest.mark.parametrize("marked,message", cases(
    (network(blocks="layers §0; width 4"), "layers must be at least 1, got 0"),
    (network(blocks="layers §-2; width 4"), "layers must be at least 1, got -2"),
    (network(blocks="layers 3; width §0"), "width must be at least 1"),
    (network(blocks="layers 3; width 4; stages §0"), "stages must be at least 1"),
    (network(stem="conv 3x3 §0"), "conv width must be at least 1"),
    (network(stem="conv §0 16"), "kernel must be at least 1"),
    (network(input="§0x32x32"), "input channels must be at least 1"),
    (network(head="pool global; fc §0"), "fc width must be at least 1"),
    (network(count="§0"), "block count must be at least 1"),
    (network(transition="conv 1x1 C; se reduction §0"), "se reduction must be at least 1"),
    (network(blocks="layers 3; width 4; bottleneck §-1"), "bottleneck width must be at least 1"),
))
def test_sizes_must_be_positive(tmp_path, marked, message):
    assert message in error_at(tmp_path, marked).message


def test_steps_past_the_layer_count(tmp_path):
    err = error_at(tmp_path, network(blocks="layers 3; width 4; steps §5"))
    assert err.message == "steps 5 is more than the block's 3 layers"
    err = error_at(tmp_path, network(blocks="layers 3; width 4; stages 1; steps §2"))
    assert "with stages 1 there is none" in err.message


def test_a_policy_naming_a_stage_the_block_does_not_have(tmp_path):
    err = error_at(tmp_path, network(blocks="layers 3; width 4; stages 2; feature §x0 + stage3"))
    assert err.message == "feature names stage3, but the block has 2 stages"
    err = error_at(tmp_path, network(blocks="layers 3; width 4; stages 1; transit §stage2"))
    assert err.message == "transit names stage2, but the block has 1 stage"
    err = error_at(tmp_path, network(blocks="layers 3; width 4; feature §x0 + x0"))
    assert "twice" in err.message


def test_transit_none_before_the_last_block(tmp_path):
    err = error_at(tmp_path, network(blocks="layers 3; width 4; transit §none"))
    assert "block 1 sends nothing to the next block" in err.message


@pytest.mark.parametrize("edges,message", [
    ("0 -> 1, 1 -> §9", "there is no X_9: the block has X_0..X_3"),
    ("0 -> 1, §12 -> 2", "there is no X_12"),
    ("0 -> 1, §2 -> 2", "X_2 -> X_2 is a self-loop"),
    ("0 -> 1, §1 -> 0", "nothing feeds X_0"),
    ("0 -> 1, §0 <-> 2", "nothing feeds X_0"),
    ("0 -> 1, 1 -> 2, §1 -> 2", "W_12 is listed twice"),
    ("0 -> 1, §x0 -> 2", "edge source must be a whole number"),
])
def test_bad_edges(tmp_path, edges, message):
    marked = network(count="1", blocks=f"layers 3; width 4; topology edges {{ {edges} }}")
    assert message in error_at(tmp_path, marked).message


def test_a_layer_without_a_stage_one_input(tmp_path):
    marked = network(count="1", blocks="layers 3; width 4; topology §edges { 0 -> 1, 3 -> 2, "
                     "1 -> 3 }")
    err = error_at(tmp_path, marked)
    assert "layer X_2 has no input in Stage I" in err.message and "1 -> 2" in err.hint


def test_a_list_with_the_wrong_length(tmp_path):
    err = error_at(tmp_path, network(count="3", blocks="layers 3; width §[4, 8]"))
    assert err.message == "width lists 2 values for 3 blocks"


def test_pooling_below_1x1(tmp_path):
    # 8x8 halves to 4, 2, 1: a fourth transition would pool a 1x1 map
    err = error_at(tmp_path, network(input="3x8x8", count="5",
                                     transition="conv 1x1 C; §pool avg 2"))
    assert "pooling in the transition 4 would go below 1x1" in err.message
    err = error_at(tmp_path, network(input="3x2x2", stem="conv 3x3 8; §pool max 3"))
    assert "pooling in the stem would go below 1x1" in err.message
    err = error_at(tmp_path, network(input="3x2x2", stem="§conv 5x5 8 padding 0"))
    assert "conv in the stem would go below 1x1" in err.message


def test_missing_pieces(tmp_path):
    err = error_at(tmp_path, "§network n { blocks 1 { layers 2; width 2 } head { pool global } }")
    assert err.message == "network n has no `input`"
    err = error_at(tmp_path, "§network n { input 3x8x8; head { pool global } }")
    assert err.message == "network n has no `blocks`"
    err = error_at(tmp_path, "§network n { input 3x8x8; blocks 1 { layers 2; width 2 } }")
    assert err.message == "network n has no `head`"
    err = error_at(tmp_path, network(blocks="width 4").replace("blocks 2", "§blocks 2"))
    assert err.message == "blocks need `layers`"
    err = error_at(tmp_path, "network n { input 3x8x8\n §blocks 2 { layers 2; width 2 }\n"
                   "head { pool global } }")
    assert err.message == "several blocks need a `transition { ... }` between them"
    err = error_at(tmp_path, network(head="bn").replace("head {", "§head {"))
    assert "the head needs a `pool global`" in err.message
    err = error_at(tmp_path, network(blocks="layers 2; width 2; feature none")
                   .replace("head {", "§head {"))
    assert err.message == "no block sends a feature to the head"


def test_params_declared_wrongly(tmp_path):
    err = error_at(tmp_path, network(params="param a = 1\n  §param a = 2"))
    assert "declared twice" in err.message
    err = error_at(tmp_path, network(params="§param C = 1"))
    assert "'C' is a reserved word" in err.message
    err = error_at(tmp_path, network(params="§param stage2 = 1"))
    assert "reserved" in err.message
    err = error_at(tmp_path, network(params="if true { §param a = 1 }"))
    assert "inside `if`" in err.message
    err = error_at(tmp_path, network(params="param a = §b + 1\n  param b = a * 2"))
    assert err.message == "param cycle: a -> b -> a"


def test_syntax_errors_say_what_was_expected(tmp_path):
    err = error_at(tmp_path, "network n { param k = (1 + 2 §}")
    assert err.message == "unexpected '}'" and "`)`" in err.hint
    assert "`blocks`" not in err.hint  # only what the parser would accept there
    err = error_at(tmp_path, "network n { input 3x8x8 §$ }")
    assert err.message == "unexpected character '$'"
    err = error_at(tmp_path, 'network n {\n  param k = 1\n  blocks 1 { layers 2§\n\n')
    assert err.message == "unexpected end of file" and "`}`" in err.hint
    err = error_at(tmp_path, "network n { blocks 1 { layers §} }")
    assert err.message == "unexpected '}'" and "a number" in err.hint
    err = error_at(tmp_path, "network n { §width 4 }")
    assert err.message == "unexpected 'width'" and "`blocks`" in err.hint


# ---- limits ---------------------------------------------------------------------------------

@pytest.mark.parametrize("marked,message", cases(
    (network(blocks="layers §1001; width 4"), "layers 1001 is past the limit of 1000"),
    (network(blocks="layers §1000000000; width 4"), "past the limit of 1000"),
    (network(blocks="layers 3; width §65537"), "width 65537 is past the limit of 65536"),
    (network(blocks="layers 3; width 4; stages §17"), "stages 17 is past the limit of 16"),
    (network(stem="conv 3x3 §65537"), "past the limit of 65536"),
    (network(count="§65"), "block count 65 is past the limit of 64"),
    (network(input="§3x100000x100000"), "input height 100000 is past the limit"),
    (network(stem="conv §33 8"), "kernel 33 is past the limit of 31"),
    (network(count="1", blocks="layers 1000; width 1; topology §clique"),
     "a clique of 1000 layers has 1,000,000 W_ij, past the limit of 250,000"),
    (network(count="1", blocks="layers 1000; width 1; topology §erdos_renyi(p = 1)"),
     "past the limit of 250,000"),
    (network(count="1", blocks="layers 1000; width 1; topology §watts_strogatz(k = 998, "
             "p = 0.1)"), "past the limit of 250,000"),
    (network(count="1", blocks="layers 1000; width 1; topology §barabasi_albert(m = 500)"),
     "past the limit of 250,000"),
))
def test_limits_are_refused_quickly(tmp_path, marked, message):
    start = time.perf_counter()
    err = error_at(tmp_path, marked)
    assert time.perf_counter() - start < 2
    assert message in err.message


def test_channels_growing_past_the_limit_are_refused_quickly(tmp_path):
    # each block passes on its input and 600 x 60 more channels: the third's is past 65536
    marked = network(count="3", blocks="layers 600; width 60; topology chain; transit x0 + last",
                     transition="pool avg 1").replace("blocks 3", "§blocks 3")
    start = time.perf_counter()
    err = error_at(tmp_path, marked)
    assert time.perf_counter() - start < 2
    assert "channels, past the limit of 65536" in err.message


def test_the_w_ij_limit_holds_for_the_whole_network(tmp_path):
    # 125,250 W_ij per block is fine, but not twice
    err = error_at(tmp_path, network(count="2", blocks="layers 500; width 1; topology §dense",
                                     transition="pool avg 1"))
    assert err.message == "with block 2 the network has 250,500 W_ij, past the limit of 250,000"


def test_the_parameter_limit(tmp_path):
    marked = network(count="1", stem="conv 3x3 60000", blocks="layers 1; width 1",
                     head="pool global; fc 60000").replace("blocks 1", "§blocks 1")
    err = error_at(tmp_path, marked)
    assert "parameters is past the limit of 2,000,000,000" in err.message


# ---- includes and extends -------------------------------------------------------------------

def test_extends_cycles(tmp_path):
    err = error_at(tmp_path, "network a extends b { }\n§network b extends a { }\n")
    assert err.message == "extends cycle: b -> a -> b"
    err = error_at(tmp_path, "§network a extends a { }\n")
    assert err.message == "extends cycle: a -> a"
    err = error_at(tmp_path, "§network a extends b { }\nnetwork b extends a { }\n"
                   "network c extends a { }\n")
    assert err.message == "extends cycle: c -> a -> b -> a"


def test_include_cycles(tmp_path):
    err = error_at(tmp_path, '§include "self.clq"\nnetwork s { }\n', name="self.clq")
    assert "cannot include 'self.clq': include cycle" in err.message
    # b includes a, a includes b: the include that closes the cycle is the one shown
    a = write(tmp_path, 'include "b.clq"\nnetwork a { }\n', "a.clq")
    b = write(tmp_path, 'include "a.clq"\nnetwork b { }\n', "b.clq")
    with pytest.raises(SpecError) as info:
        elaborate(b)
    err = info.value
    assert (err.file, err.line, err.column) == (str(a), 1, 1)
    assert "cannot include 'b.clq': include cycle" in err.message
    check_rendering(err, a, 1, 1, 'include "b.clq"')


def test_a_missing_include_points_at_the_include_line(tmp_path):
    err = error_at(tmp_path, 'network x { }\n§include "nowhere.clq"\nnetwork n extends x { }\n')
    assert err.message == "cannot include 'nowhere.clq': no such file"
    (tmp_path / "folder.clq").mkdir()
    err = error_at(tmp_path, '§include "folder.clq"\nnetwork n { }\n')
    assert "cannot include 'folder.clq': is a directory" in err.message


def test_an_error_inside_an_included_file_points_into_that_file(tmp_path):
    lib = write(tmp_path, "network base {\n  input 3x8x8\n  param k = kk\n}\n", "lib.clq")
    main = write(tmp_path, 'include "lib.clq"\nnetwork n extends base { }\n', "main.clq")
    with pytest.raises(SpecError) as info:
        elaborate(main)
    assert (info.value.file, info.value.line, info.value.column) == (str(lib), 3, 13)


def test_a_network_defined_twice(tmp_path):
    err = error_at(tmp_path, "network a { }\n§network a { }\n")
    assert "defined twice" in err.message
    write(tmp_path, "network a { }\n", "other.clq")
    err = error_at(tmp_path, 'include "other.clq"\n§network a { }\n')
    assert "also defined in" in err.message


# ---- --set values ---------------------------------------------------------------------------

@pytest.mark.parametrize("value,col,message", [
    ("kk", 1, "unknown name 'kk'"),
    ("T + kk", 5, "unknown name 'kk'"),
    ("6 4", 3, "unexpected '4'"),
    ("4 } network evil {", 3, "unexpected '}'"),
    ("1 +", 4, "unexpected end of value"),
    ("((", 3, "unexpected end of value"),
    ("true", 1, "param k is a number (default 36), got true"),
    ("1 / 0", 5, "division by zero"),
])
def test_a_bad_set_value_is_located_in_the_value(value, col, message):
    with pytest.raises(SpecError) as info:
        elaborate(SPECS / "cliquenet-cifar.clq", {"k": value})
    err = info.value
    assert (err.file, err.line, err.column) == ("--set k", 1, col)
    assert message in err.message
    check_rendering(err, "--set k", 1, col, value)


def test_bad_overrides_from_python(tmp_path):
    cifar = SPECS / "cliquenet-cifar.clq"
    with pytest.raises(SpecError, match="no param 'kk'") as info:
        elaborate(cifar, {"kk": 3})
    assert "did you mean 'k'" in info.value.hint
    with pytest.raises(SpecError, match="param attention is a bool"):
        elaborate(cifar, {"attention": 3})
    with pytest.raises(SpecError, match="cannot use dict"):
        elaborate(cifar, {"k": {"a": 1}})
    with pytest.raises(SpecError, match="too large"):
        elaborate(cifar, {"dropout": "1" + "0" * 400})
    with pytest.raises(SpecError, match="one line"):
        elaborate(cifar, {"k": "4\n5"})


# ---- robustness: nothing but a SpecError, quickly -------------------------------------------

def robustness_inputs(folder):
    """name -> path of inputs that must give a SpecError."""
    cifar = (SPECS / "cliquenet-cifar.clq").read_bytes()
    files = {
        "truncated.clq": cifar[:len(cifar) // 2],
        "truncated-in-token.clq": cifar[:cifar.index(b"conv 3x3") + 6],
        "binary.clq": b"network n {\x00\x01\x02 }",
        "latin1.clq": "network n { # caf\xe9\n}\n".encode("latin-1"),
        "braces.clq": b"{" * 200_000,
        "parens.clq": b"network n { param a = " + b"(" * 5000 + b"1" + b")" * 5000 + b" }",
        "sum.clq": b"network n { param a = " + b"+".join([b"1"] * 5000) + b" }",
        "minus.clq": b"network n { param a = " + b"-" * 5000 + b"1 }",
        "nots.clq": b"network n { param a = " + b"not " * 5000 + b"true }",
        "ifs.clq": b"network n { param a = " + b"if true then 1 else " * 3000 + b"1 }",
        "huge.clq": b"# " + b"x" * (1 << 20) + b"\n",
        "empty.clq": b"",
        "only-comments.clq": b"# nothing here\n",
        "bom.clq": "\ufeffnetwork n { }".encode("utf-8"),
        "long-number.clq": b"network n { param a = " + b"9" * 5000 + b" }",
        "huge-float.clq": b"network n { param a = 1e999 }",
    }
    paths = {}
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = path
    (folder / "a-directory.clq").mkdir()
    paths["a-directory.clq"] = folder / "a-directory.clq"
    paths["missing.clq"] = folder / "missing.clq"
    return paths


def test_robustness_inputs_give_spec_errors_quickly(tmp_path):
    for name, path in robustness_inputs(tmp_path).items():
        start = time.perf_counter()
        with pytest.raises(SpecError) as info:
            elaborate(path)
        assert time.perf_counter() - start < 2, name
        err = info.value
        assert err.file == str(path), name
        assert str(err).startswith(f"{path}:"), name
        if err.line is not None:
            assert err.column is not None and err.column >= 1, name


def test_where_robustness_errors_point(tmp_path):
    paths = robustness_inputs(tmp_path)

    def err(name):
        with pytest.raises(SpecError) as info:
            parse_file(paths[name])
        return info.value
    assert (err("binary.clq").line, err("binary.clq").column) == (1, 12)
    assert "NUL" in err("binary.clq").message
    latin1 = err("latin1.clq")
    assert (latin1.line, latin1.column) == (1, 18) and "UTF-8" in latin1.message
    assert (err("braces.clq").line, err("braces.clq").column) == (1, 65)
    assert "nesting deeper than 64" in err("parens.clq").message
    assert err("missing.clq").message == "no such file" and err("missing.clq").line is None
    assert "directory" in err("a-directory.clq").message
    assert "larger than" in err("huge.clq").message
    assert err("truncated.clq").message == "unexpected end of file"
    assert "out of range" in err("huge-float.clq").message
    assert "bad number" in err("long-number.clq").message
    with pytest.raises(SpecError, match="no network"):
        elaborate(paths["empty.clq"])


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "bom.clq"
    path.write_bytes("\ufeffnetwork n { param k = 1 }\n".encode("utf-8"))
    assert parse_file(path).networks[0].name == "n"


def test_parse_of_text_never_raises_anything_else():
    for text in ["", "}", "network", "network n", "network n {", '"', 'include "', "include",
                 "network n { param = }", "network n { blocks { topology edges { -> } } }",
                 "\x00", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                 "network n { param a = 1e99999 }", "network n { blocks 1 { layers 2 } }" * 3]:
        try:
            parse(text)
        except SpecError as err:
            assert str(err)


# ---- the error type itself ------------------------------------------------------------------

def test_spec_error_rendering():
    err = SpecError("boom", file="f.clq", line=2, column=5, source_line="\tab cd", hint="try x")
    assert str(err) == "f.clq:2:5: error: boom\n    2 |  ab cd\n      |     ^\nhint: try x"
    assert str(SpecError("gone", file="f.clq")) == "f.clq: error: gone"
    assert str(SpecError("what")) == "<spec>: error: what"
    long = SpecError("far", file="f", line=1, column=5000, source_line="x" * 10_000)
    source, caret = str(long).split("\n")[1:3]
    assert len(source) < 220
    assert source[caret.index("^")] == "x"
    assert isinstance(err, Exception) and err.message == "boom" and err.hint == "try x"


def test_did_you_mean():
    assert did_you_mean("widht", ["width", "layers"]) == "did you mean 'width'?"
    assert did_you_mean("zzz", ["width", "layers"]) is None


def test_errors_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    path = write(tmp_path, network(blocks="layers 3; width kk"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        elaborate(os.path.basename(path))
    assert info.value.file == "bad.clq" and info.value.line == 5
