"""`cliquegraph check` and `cliquegraph fmt`: exit 0 ok, 1 spec error, 2 usage error; errors on
stderr as file:line:col with a caret, never a traceback; and neither command imports torch."""

import shutil
import subprocess
import sys

import pytest

from cliquegraph import elaborate, fmt, parse_file
from cliquegraph.cli import main
from conftest import ROOT, SPECS
from test_errors import robustness_inputs

MESSY = "network n{param k=4;input 3x32x32\nblocks 1{layers 2;width k}head{pool global;fc 10}}"


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def cli(*args, cwd=ROOT):
    """The command as a user runs it: a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "cliquegraph", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def specs(tmp_path):
    folder = tmp_path / "specs"
    shutil.copytree(SPECS, folder)
    return folder


# ---- check ----------------------------------------------------------------------------------

def test_check_valid_specs_exits_0(capsys):
    code, out, err = run(["check", str(SPECS / "s3.clq"), str(SPECS / "densenet-121.clq")],
                         capsys)
    assert code == 0 and err == ""
    assert f"{SPECS / 's3.clq'}: ok  network cliquenet_s3, input 3x224x224, 4 blocks, " \
           "14,383,024 params, 1000 outputs" in out
    assert "7,978,856 params" in out


def test_check_a_spec_error_exits_1_with_the_located_message(tmp_path, capsys):
    bad = tmp_path / "bad.clq"
    bad.write_text(MESSY.replace("width k", "width kk"), encoding="utf-8")
    code, out, err = run(["check", str(SPECS / "s0.clq"), str(bad)], capsys)
    assert code == 1
    assert "s0.clq: ok" in out  # the good file is still checked
    assert f"{bad}:2:25: error: unknown name 'kk'" in err
    assert "    2 | blocks 1{layers 2;width kk}" in err and "^" in err
    assert "did you mean 'k'?" in err


def test_check_with_overrides(capsys):
    code, out, _ = run(["check", str(SPECS / "cliquenet-cifar.clq"), "--set", "k=64",
                        "--set", "T=15"], capsys)
    assert code == 0 and "4,485,706 params" in out
    code, out, _ = run(["check", str(SPECS / "s3.clq"), "--set", "widths=[8, 12, 16, 8]"],
                       capsys)
    assert code == 0 and "4 blocks" in out
    assert out != run(["check", str(SPECS / "s3.clq")], capsys)[1]
    code, out, err = run(["check", str(SPECS / "s3.clq"), "--set", "widths=[8, 12]"], capsys)
    assert code == 1 and "layers lists 4 values for 2 blocks" in err


@pytest.mark.parametrize("argv,message", [
    (["check", "specs/s3.clq", "--set", "k"], "--set wants NAME=VALUE"),
    (["check", "specs/s3.clq", "--set", "=4"], "--set wants NAME=VALUE"),
    (["check", "specs/s3.clq", "--set", "k="], "--set wants NAME=VALUE"),
    (["check", "specs/s3.clq", "--set", "1k=4"], "--set wants NAME=VALUE"),
    (["fmt", "specs/s3.clq", "specs/s0.clq"], "several files need --write or --check"),
])
def test_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert message in err and "usage: cliquegraph" in err


@pytest.mark.parametrize("argv", [["check"], ["fmt"], [], ["frobnicate"],
                                  ["fmt", "--write", "--check", "x.clq"]])
def test_argparse_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bad_overrides_exit_1(capsys):
    code, _, err = run(["check", str(SPECS / "s3.clq"), "--set", "widht=[1]"], capsys)
    assert code == 1 and "no param 'widht'" in err and "did you mean 'widths'" in err
    code, _, err = run(["check", str(SPECS / "s3.clq"), "--set", "attention=3"], capsys)
    assert code == 1 and "param attention is a bool" in err
    code, _, err = run(["check", str(SPECS / "s3.clq"), "--set", "attention=tru"], capsys)
    assert code == 1 and "--set attention:1:1: error: unknown name 'tru'" in err


# ---- fmt ------------------------------------------------------------------------------------

def test_fmt_prints_canonical_text(tmp_path, capsys):
    messy = tmp_path / "messy.clq"
    messy.write_text(MESSY, encoding="utf-8")
    code, out, err = run(["fmt", str(messy)], capsys)
    assert code == 0 and err == ""
    assert out == ("network n {\n  param k = 4\n  input 3x32x32\n  blocks 1 {\n    layers 2\n"
                   "    width k\n  }\n  head {\n    pool global\n    fc 10\n  }\n}\n")
    assert messy.read_text(encoding="utf-8") == MESSY  # printing does not write
    for path in sorted(SPECS.glob("*.clq")):
        assert run(["fmt", str(path)], capsys)[1] == path.read_text(encoding="utf-8")


def test_fmt_check_and_write(tmp_path, capsys):
    messy = tmp_path / "messy.clq"
    messy.write_text(MESSY, encoding="utf-8")
    code, _, err = run(["fmt", "--check", str(messy)], capsys)
    assert code == 1 and f"{messy}: not formatted" in err
    assert messy.read_text(encoding="utf-8") == MESSY
    code, _, err = run(["fmt", "--check", *map(str, sorted(SPECS.glob("*.clq")))], capsys)
    assert code == 0 and err == ""

    code, _, err = run(["fmt", "--write", str(messy)], capsys)
    assert code == 0 and f"{messy}: formatted" in err
    text = messy.read_text(encoding="utf-8")
    assert text == fmt(parse_file(messy)) and text != MESSY
    assert run(["fmt", "--check", str(messy)], capsys)[0] == 0
    mtime = messy.stat().st_mtime_ns
    assert run(["fmt", "--write", str(messy)], capsys)[:2] == (0, "")
    assert messy.stat().st_mtime_ns == mtime  # a canonical file is left alone
    assert [p.name for p in tmp_path.iterdir()] == ["messy.clq"]  # no temporary left behind


def test_fmt_of_a_bad_file_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.clq"
    bad.write_text("network n { param k = }", encoding="utf-8")
    for argv in (["fmt", str(bad)], ["fmt", "--check", str(bad)], ["fmt", "--write", str(bad)]):
        code, out, err = run(argv, capsys)
        assert code == 1 and out == "" and f"{bad}:1:23: error: unexpected '}}'" in err
    assert bad.read_text(encoding="utf-8") == "network n { param k = }"


def test_fmt_set_bakes_an_override_in_as_the_new_default(specs, capsys):
    code, out, _ = run(["fmt", "--set", "k=64", str(specs / "cliquenet-cifar.clq")], capsys)
    assert code == 0 and "\n  param k = 64               # filters per layer\n" in out
    baked = specs / "baked.clq"
    baked.write_text(out, encoding="utf-8")
    assert elaborate(baked).param("k") == 64
    assert [b.width for b in elaborate(baked).blocks] == [64, 64, 64]
    assert fmt(parse_file(baked)) == out


def test_fmt_set_of_a_param_declared_by_the_parent(specs, capsys):
    code, out, _ = run(["fmt", "--set", "attention=false", "--set", "widths=[8, 12, 16, 8]",
                        str(specs / "s3.clq")], capsys)
    assert code == 0
    assert "param attention = false" in out and "param widths = [8, 12, 16, 8]" in out
    assert out.startswith("# CliqueNet-S3")  # comments stay
    baked = specs / "baked.clq"  # next to the file it includes
    baked.write_text(out, encoding="utf-8")
    n = elaborate(baked)
    assert n.param("attention") is False and [b.width for b in n.blocks] == [8, 12, 16, 8]
    assert all("se" not in [op.kind for op in ops] for ops in n.transitions)


def test_fmt_set_refuses_an_override_that_breaks_the_network(specs, capsys):
    code, out, err = run(["fmt", "--set", "widths=[8, 12]", str(specs / "s3.clq")], capsys)
    assert code == 1 and out == "" and "layers lists 4 values for 2 blocks" in err


# ---- a fresh interpreter: entry point, robustness, no torch ----------------------------------

def test_python_m_cliquegraph():
    result = cli("check", "specs/s3.clq")
    assert result.returncode == 0 and "specs/s3.clq: ok" in result.stdout
    result = cli("check")
    assert result.returncode == 2 and "usage:" in result.stderr


def test_bad_inputs_give_messages_not_tracebacks(tmp_path):
    paths = robustness_inputs(tmp_path)
    names = sorted(paths)
    for command in (["check"], ["fmt", "--check"]):
        result = cli(*command, *(str(paths[n]) for n in names))
        assert result.returncode == 1, command
        assert "Traceback" not in result.stderr + result.stdout
        for name in names:
            if command == ["fmt", "--check"] and name in ("empty.clq", "only-comments.clq",
                                                          "bom.clq"):
                continue  # they parse: fmt has nothing to say but "not formatted" at most
            assert f"{paths[name]}" in result.stderr, (command, name)
        assert result.stderr.count(": error: ") >= len(names) - 3


def test_check_and_fmt_do_not_import_torch():
    code = ("import sys, cliquegraph.cli as c\n"
            "for argv in (['check', 'specs/s3.clq'], ['fmt', 'specs/s3.clq'],\n"
            "             ['fmt', '--set', 'k=4', 'specs/cliquenet-cifar.clq']):\n"
            "    assert c.main(argv) == 0, argv\n"
            "    assert 'torch' not in sys.modules, f'{argv} imported torch'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
