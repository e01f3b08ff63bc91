"""A spec never hangs the tool, never eats the memory, never reads files it was not given, and
its errors say where and why, in the words of the person who typed the command.

Anything that could hang runs under a deadline; anything that could grow without bound runs in
a child process with an address-space limit, so a regression fails the test instead of the
machine.
"""

import builtins
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest

from cliquegraph import SpecError, elaborate, fmt, parse, parse_file
from cliquegraph import values
from cliquegraph.parse import MAX_SPEC_BYTES, grammar_text
from conftest import ROOT, SPECS


class Hung(Exception):
    """Not an OSError: the code under test must not mistake it for a failed read."""


@contextmanager
def deadline(seconds):
    """Hung if the body runs past `seconds` (a blocked open() is interrupted too)."""
    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def spec_error(*args, **kwargs) -> SpecError:
    with deadline(10), pytest.raises(SpecError) as info:
        elaborate(*args, **kwargs)
    return info.value


SMALL = """network n {{
  {params}
  input {input}
  blocks {count} {{ layers 2; width 4; {blocks} }}
  transition {{ conv 1x1 C; pool avg 2 }}
  head {{ pool global; fc 10 }}
}}
"""


def small(params="", input="3x32x32", count="1", blocks=""):
    return SMALL.format(params=params, input=input, count=count, blocks=blocks)


def write(folder, text, name="spec.clq"):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- only regular files are read -------------------------------------------------------------

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")


@needs_fifo
def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.clq"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(SpecError) as info:
        parse_file(fifo)
    assert "not a regular file" in info.value.message and info.value.file == str(fifo)


@needs_fifo
def test_including_a_named_pipe_points_at_the_include(tmp_path):
    os.mkfifo(tmp_path / "pipe.clq")
    main = write(tmp_path, 'include "pipe.clq"\n' + small())
    err = spec_error(main)
    assert (err.file, err.line, err.column) == (str(main), 1, 1)
    assert err.message.startswith("cannot include 'pipe.clq': not a regular file")


def test_a_device_is_refused(tmp_path):
    main = write(tmp_path, 'include "/dev/null"\n' + small())
    err = spec_error(main)
    assert "not a regular file" in err.message and err.line == 1


# ---- a spec given as text: size limit, no file system ----------------------------------------

def test_spec_text_has_the_size_limit_of_a_file():
    err = spec_error("ckpt.clq", text="#" * (MAX_SPEC_BYTES + 1) + "\n" + small())
    assert "larger than" in err.message


def test_spec_text_without_includes_reads_no_file(monkeypatch):
    parse("network warm { }")  # the grammar itself is read once, before the guard below
    text = 'include "/etc/passwd"\n' + small()

    def refuse(*args, **kwargs):
        raise AssertionError(f"read the file system: {args}")
    for module, name in ((os, "open"), (os, "stat"), (os, "lstat"), (os.path, "realpath"),
                         (builtins, "open")):
        monkeypatch.setattr(module, name, refuse)
    try:
        with pytest.raises(SpecError) as info:
            elaborate("run/spec.clq", text=text, includes=False)
    finally:
        monkeypatch.undo()
    err = info.value
    assert (err.file, err.line, err.column) == ("run/spec.clq", 1, 1)
    assert "cannot include '/etc/passwd'" in err.message and "root" not in str(err)


@pytest.mark.parametrize("name", ["s3.clq", "densenet-169.clq"])
def test_what_a_checkpoint_keeps_builds_without_includes(name):
    """standalone() inlines every include: a real checkpoint's text never needs a file."""
    from cliquegraph.elaborate import count_params
    from cliquegraph.load import standalone
    text = standalone(SPECS / name)
    net = elaborate(f"run/{name}", {"k": "8"} if "densenet" in name else None, text=text,
                    includes=False)
    want = elaborate(SPECS / name, {"k": "8"} if "densenet" in name else None)
    assert count_params(net) == count_params(want)


# ---- no unbounded values ---------------------------------------------------------------------

def _elaborate_in_child(tmp_path, text):
    """Elaborate `text` in a child limited to 1 GiB of address space and 60 s: a value that
    grows without bound fails there, not here."""
    path = write(tmp_path, text)
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from cliquegraph import SpecError, elaborate
        try:
            elaborate({str(path)!r})
        except SpecError as err:
            print(err.file, err.line, err.column, err.message, sep="|")
            sys.exit(0)
        print("built")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    file, line, col, message = result.stdout.strip().split("|")
    assert file == str(path)
    return int(line), int(col), message


def _doubling(first, step, rounds=40):
    lines = [f"param a0 = {first}"] + [f"param a{i} = {step.format(p=f'a{i - 1}')}"
                                       for i in range(1, rounds + 1)]
    return small(params="\n  ".join(lines), blocks=f"width len([a{rounds}])")


@pytest.mark.parametrize("first,step", [
    ("[1, 2]", "{p} + {p}"),        # list concatenation
    ("[1, 2]", "[{p}, {p}]"),       # nesting
    ("[]", "[{p}, {p}, {p}]"),      # nesting empty lists
    ("x0", "{p} + {p}"),            # feature policies
])
def test_values_that_double_stop_at_a_located_limit(tmp_path, first, step):
    line, col, message = _elaborate_in_child(tmp_path, _doubling(first, step))
    assert "past the limit" in message
    assert 2 < line < 40 and col > 1  # the param whose value first passes the limit


def test_a_long_list_from_python_is_refused():
    err = spec_error(SPECS / "s3.clq", {"widths": list(range(values.MAX_ITEMS + 1))})
    assert err.file == "--set widths" and "past the limit" in err.message


# ---- messages a newcomer can act on ----------------------------------------------------------

def test_pooling_below_one_pixel_asks_for_a_larger_input(tmp_path):
    path = write(tmp_path, small(input="3x2x2", count="3"))
    err = spec_error(path)
    assert "below 1x1" in err.message
    assert "larger input" in err.hint and "smaller input" not in err.hint


def test_a_conv_larger_than_its_input_asks_for_a_larger_input(tmp_path):
    text = small(input="3x2x2").replace("input 3x2x2", "input 3x2x2\n  stem { conv 5x5 8 "
                                        "padding 0 }")
    err = spec_error(write(tmp_path, text))
    assert "below 1x1" in err.message and "larger input" in err.hint


@pytest.mark.parametrize("param,value,says,hint", [
    ("k", "abc", "k is a number (default 36)", "--set k=36"),
    ("attention", "tru", "param attention is a bool (default false)", "'true'"),
    ("transit", "lst", "param transit is a symbol (default last)", "'last'"),
    ("transit", "qqq", "param transit is a symbol (default last)",
     "a symbol is written bare, as in the spec: --set transit=last"),
])
def test_an_unknown_name_in_a_set_value_says_what_the_param_takes(param, value, says, hint):
    err = spec_error(SPECS / "cliquenet-cifar.clq", {param: value})
    assert (err.file, err.line, err.column) == (f"--set {param}", 1, 1)
    assert err.message.startswith(f"unknown name {value!r}") and says in err.message
    assert hint in err.hint


def test_an_error_caused_by_an_override_names_the_override():
    err = spec_error(SPECS / "cliquenet-cifar.clq", {"T": "13"})
    assert err.file == str(SPECS / "cliquenet-cifar.clq")
    assert "(T = 13 comes from --set T=13)" in err.message


def test_an_override_reaching_an_error_through_another_param_is_named(tmp_path):
    path = write(tmp_path, small(params="param T = 12\n  param n = T / 3", blocks="layers n"))
    err = spec_error(path, {"T": "10"})
    assert err.line == 5 and "T = 10 comes from --set T=10" in err.message
    err = spec_error(path, {"T": "10", "n": "2.5"})
    assert "n = 2.5 comes from --set n=2.5" in err.message and "T = 10" not in err.message
    path = write(tmp_path, small(params="param T = 12", blocks="layers 2.5"))
    assert "comes from" not in spec_error(path, {"T": "10"}).message  # T played no part


@pytest.mark.parametrize("text,line,col", [
    ("", 1, 1),
    ("# only a comment\n", 1, 17),
    ('include "lib.clq"\n\n', 1, 18),
])
def test_a_file_without_a_network_is_located(tmp_path, text, line, col):
    write(tmp_path, small(), "lib.clq")
    path = write(tmp_path, text)
    err = spec_error(path)
    assert (err.file, err.line, err.column) == (str(path), line, col)
    assert err.message == "no network in this file" and "network NAME {" in err.hint
    assert str(err).startswith(f"{path}:{line}:{col}: error: ")


# ---- one topology per block, explicit edges included -----------------------------------------

PER_BLOCK = "topology [clique, edges { 0 -> 1, 1 <-> 2 }, chain]"


def test_per_block_edge_lists_parse_and_round_trip():
    text = small(count="3", blocks=PER_BLOCK)
    spec = parse(text)
    assert parse(fmt(spec)) == spec and fmt(parse(fmt(spec))) == fmt(spec)
    assert "edges { 0 -> 1, 1 <-> 2 }" in fmt(spec)


def test_each_block_gets_its_own_topology(tmp_path):
    net = elaborate(write(tmp_path, small(count="3", blocks=PER_BLOCK)))
    assert [b.topology for b in net.blocks] == ["clique", "edges", "chain"]
    assert set(net.blocks[1].graph.edges()) == {(0, 1), (1, 2), (2, 1)}
    assert net.blocks[0].graph.number_of_edges() == 4


def test_an_edge_list_can_be_a_param_and_an_override(tmp_path):
    path = write(tmp_path, small(params="param t = edges { 0 -> 1, 1 -> 2 }",
                                 blocks="topology t"))
    assert set(elaborate(path).blocks[0].graph.edges()) == {(0, 1), (1, 2)}
    net = elaborate(path, {"t": "edges { 0 -> 2, 0 -> 1, 2 <-> 1 }"})
    assert set(net.blocks[0].graph.edges()) == {(0, 1), (0, 2), (1, 2), (2, 1)}


def test_an_edge_in_a_per_block_list_is_checked_against_its_block(tmp_path):
    text = small(count="2", blocks="topology [edges { 0 -> 1, 1 -> 2 }, edges { 0 -> 1, 1 -> 9 }]")
    err = spec_error(write(tmp_path, text))
    assert "there is no X_9" in err.message and err.line == 4
    assert err.column == text.split("\n")[3].index("9") + 1


def test_every_generator_is_documented_with_its_arguments():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    language = readme[readme.index("## The language"):]
    language = language[:language.index("\n## ", 3)]
    for kind, args in values.GENERATORS.items():
        for doc in (grammar_text(), language):
            assert f"{kind}(" in doc, kind
            mention = doc[doc.index(f"{kind}("):][:120]
            assert all(a in mention for a in args), (kind, mention)
