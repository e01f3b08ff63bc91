"""Render: the diagrams say what the IR says — one edge per W_ij, Table 1 as the schedule,
Figure 2's shapes, Figure 5's heatmaps — and the CLI fails cleanly."""

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from cliquegraph import cli, elaborate, render
from conftest import SPECS

TINY = """\
network tiny {
  input 3x8x8
  stem {
    conv 3x3 8
  }
  blocks 2 {
    layers 5
    width 4
    topology clique
    stages 2
  }
  transition {
    pool avg 2
  }
  head {
    pool global
    fc 2
  }
}
"""

TABLE1 = """\
X_1^(2) <- {X_2^(1), X_3^(1), X_4^(1), X_5^(1)}
X_2^(2) <- {X_3^(1), X_4^(1), X_5^(1), X_1^(2)}
X_3^(2) <- {X_4^(1), X_5^(1), X_1^(2), X_2^(2)}
X_4^(2) <- {X_5^(1), X_1^(2), X_2^(2), X_3^(2)}
X_5^(2) <- {X_1^(2), X_2^(2), X_3^(2), X_4^(2)}"""

HAS_DOT = shutil.which("dot") is not None


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.clq"
    path.write_text(TINY)
    return path


def drawn_edges(dg):
    return re.findall(r"^\s*x(\d+) -> x(\d+)", dg.source, re.M)


def run(argv, capsys):
    """cliquegraph ARGV in-process: (exit code, stdout, stderr); argparse's exits included."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# --- block view: one edge per W_ij ------------------------------------------------------------

@pytest.mark.parametrize("T", [9, 15, 24])
def test_a_clique_block_of_n_layers_draws_n_squared_edges(T):
    block = elaborate(SPECS / "cliquenet-cifar.clq", {"T": T}).blocks[0]
    n = block.layers
    assert len(drawn_edges(render.block_diagram(block))) == n * n


def test_a_dense_block_draws_n_n_plus_1_over_2_edges():
    block = elaborate(SPECS / "densenet-cifar.clq").blocks[0]
    n = block.layers
    edges = drawn_edges(render.block_diagram(block))
    assert len(edges) == n * (n + 1) // 2
    assert all(int(i) < int(j) for i, j in edges)


def test_an_explicit_edge_list_draws_exactly_its_edges():
    block = elaborate(SPECS / "partial-clique.clq").blocks[0]
    edges = {(int(i), int(j)) for i, j in drawn_edges(render.block_diagram(block))}
    assert edges == {(0, 1), (0, 3), (1, 2), (2, 1), (2, 3), (3, 4), (4, 3)}


def test_labels_show_channels_and_kernel_in_out():
    block = elaborate(SPECS / "cliquenet-cifar.clq", {"T": 15}).blocks[0]
    plain, labelled = render.block_diagram(block), render.block_diagram(block, labels=True)
    assert "64→36" not in plain.source
    assert labelled.source.count("3x3 64→36") == 5       # W_0j: C_0 -> k
    assert labelled.source.count("3x3 36→36") == 20      # W_ij between layers
    assert len(drawn_edges(labelled)) == 25


@pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot is not installed")
def test_block_svg_is_xml_with_one_node_per_x_i(tmp_path, capsys):
    out = tmp_path / "block.svg"
    code, _, _ = run(["render", SPECS / "cliquenet-cifar.clq", "--set", "T=15",
                      "--view", "block", "-o", out], capsys)
    assert code == 0
    root = ET.parse(out).getroot()
    groups = [g for g in root.iter("{http://www.w3.org/2000/svg}g")]
    nodes = [g for g in groups if g.get("class") == "node"]
    edges = [g for g in groups if g.get("class") == "edge"]
    assert len(nodes) == 6 and len(edges) == 25
    assert {g.get("id") for g in edges} == {f"w_{i}_{j}" for i in range(6)
                                            for j in range(1, 6) if i != j}


# --- schedule view: Table 1 -------------------------------------------------------------------

def test_the_schedule_of_a_5_layer_clique_is_table_1(tiny):
    text = render.schedule_text(elaborate(tiny).blocks[0])
    stage1, stage2 = text.strip().split("\n\n")
    assert stage2 == "Stage II\n" + TABLE1
    assert stage1.splitlines()[:3] == ["Stage I", "X_1^(1) <- {X_0}", "X_2^(1) <- {X_0, X_1^(1)}"]


def test_schedule_text_on_stdout_and_txt(tiny, tmp_path, capsys):
    code, out, _ = run(["render", tiny, "--view", "schedule", "--block", 2], capsys)
    assert code == 0 and TABLE1 in out
    code, _, _ = run(["render", tiny, "--view", "schedule", "-o", tmp_path / "t.txt"], capsys)
    assert code == 0 and (tmp_path / "t.txt").read_text() == out


def test_schedule_json_lists_updates_in_order(tiny, tmp_path, capsys):
    out = tmp_path / "schedule.json"
    code, _, _ = run(["render", tiny, "--view", "schedule", "-o", out], capsys)
    assert code == 0
    data = json.loads(out.read_text())
    assert data == render.schedule_data(elaborate(tiny).blocks[0])
    assert len(data) == 10
    assert data[0] == {"layer": 1, "stage": 1, "inputs": [[0, 1]]}
    assert data[2] == {"layer": 3, "stage": 1, "inputs": [[0, 1], [1, 1], [2, 1]]}
    assert data[7] == {"layer": 3, "stage": 2, "inputs": [[4, 1], [5, 1], [1, 2], [2, 2]]}


def test_more_stages_get_their_own_header():
    block = elaborate(SPECS / "cliquenet-stage3.clq").blocks[0]
    text = render.schedule_text(block)
    assert [line for line in text.splitlines() if line.startswith("Stage")] == \
        ["Stage I", "Stage II", "Stage III"]


# --- network view: Figure 2 -------------------------------------------------------------------

def test_the_network_view_shows_every_block_transition_and_shape():
    net = elaborate(SPECS / "cliquenet-cifar.clq")
    src = render.network_diagram(net).source
    for b in net.blocks:
        assert f"block {b.index}" in src
        assert f"{b.in_shape[0]}x{b.in_shape[1]}x{b.in_shape[2]}" in src
    assert "transition 1" in src and "transition 2" in src and "transition 3" not in src
    assert "144x32x32" in src and "144x16x16" in src and "144x8x8" in src  # transit shapes
    assert "208x32x32" in src and "288x8x8" in src                          # block features
    assert src.count("<B>feature</B>") == 3 and src.count("<B>transit</B>") == 2
    assert "concat → 784" in src and "FC → 10" in src


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.clq")))
def test_every_spec_draws_its_network_and_first_block(spec):
    """Every spec, `transit xn` (ResNet, MobileNet) and units that start with branches (no
    W_ij on their edges: GoogLeNet, ShuffleNet) included."""
    net = elaborate(SPECS / spec)
    src = render.network_diagram(net).source
    assert src.count("<B>transit</B>") == len(net.transitions)
    assert "X<SUB>n</SUB>" in src or all("xn" not in b.transit for b in net.blocks)
    render.block_diagram(net.blocks[0], labels=True)


def test_densenet_feeds_only_its_last_block_to_the_loss():
    src = render.network_diagram(elaborate(SPECS / "densenet-cifar.clq")).source
    assert src.count("<B>feature</B>") == 1 and "block3 -> scale3" in src


# --- weights view: Figure 5 -------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    pytest.importorskip("torch")
    import cliquegraph
    from cliquegraph import checkpoint
    spec = SPECS / "partial-clique.clq"
    path = tmp_path_factory.mktemp("ckpt") / "partial.pt"
    checkpoint.save(cliquegraph.build(spec, k=4), path)
    return path


def test_weights_view_of_a_saved_module_writes_a_png(saved, tmp_path, capsys):
    out = tmp_path / "weights.png"
    code, _, err = run(["render", saved, "--view", "weights", "-o", out], capsys)
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weight_means_are_mean_abs_and_blank_without_an_edge(saved):
    import math

    from cliquegraph.checkpoint import load_module
    gm, net, obj = load_module(saved)
    means = render.weight_means(obj["state_dict"], net.blocks[0])
    assert means.shape == (5, 4)  # sources X_0..X_4, targets X_1..X_4
    w = obj["state_dict"]["block1.w_1_2"]
    assert means[1, 1] == pytest.approx(float(w.abs().mean()))
    assert math.isnan(means[1, 0]) and math.isnan(means[0, 1])  # no W_11, no W_02
    fig = render.weights_figure(obj["state_dict"], net, block=2)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 1


def test_weights_view_of_a_spec_asks_for_a_checkpoint(tmp_path, capsys):
    code, _, err = run(["render", SPECS / "cliquenet-cifar.clq", "--view", "weights",
                        "-o", tmp_path / "w.png"], capsys)
    assert code == 2 and "needs a checkpoint" in err


# --- no `dot` program -------------------------------------------------------------------------

def test_without_dot_pictures_fail_in_one_line_and_dot_files_still_work(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing named dot on it
    spec = SPECS / "cliquenet-cifar.clq"
    for view in ("block", "network"):
        code, _, err = run(["render", spec, "--view", view, "-o", tmp_path / "x.svg"], capsys)
        assert code == 1
        assert len(err.strip().splitlines()) == 1
        assert "apt-get install graphviz" in err and "brew install graphviz" in err
        assert "-o FILE.dot" in err
    assert not (tmp_path / "x.svg").exists()
    code, _, _ = run(["render", spec, "--view", "block", "-o", tmp_path / "x.dot"], capsys)
    assert code == 0 and (tmp_path / "x.dot").read_text().startswith("digraph block1")


def test_dot_vanishing_after_the_lookup_gives_the_same_message(tmp_path, monkeypatch, capsys):
    from cliquegraph.cli import render as cli_render
    monkeypatch.setattr(cli_render.shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setenv("PATH", str(tmp_path))  # graphviz raises ExecutableNotFound
    code, _, err = run(["render", SPECS / "cliquenet-cifar.clq", "--view", "network",
                        "-o", tmp_path / "n.png"], capsys)
    assert code == 1 and "apt-get install graphviz" in err


# --- CLI exit codes ---------------------------------------------------------------------------

def test_cli_ok_writes_diagrams_and_prints_dot_source(tmp_path, capsys):
    spec = SPECS / "cliquenet-cifar.clq"
    code, out, _ = run(["render", spec, "--view", "network"], capsys)
    assert code == 0 and out.startswith("digraph cliquenet_cifar")
    code, out, _ = run(["render", spec, "--view", "block", "--block", 3, "--labels"], capsys)
    assert code == 0 and out.startswith("digraph block3")
    if HAS_DOT:
        for ext in ("png", "pdf"):
            out = tmp_path / f"n.{ext}"
            assert run(["render", spec, "--view", "network", "-o", out], capsys)[0] == 0
            assert out.read_bytes()[:4] in (b"\x89PNG", b"%PDF")


def test_cli_exit_1_for_a_broken_spec_or_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.clq"
    bad.write_text("network oops {\n  input 3x32x32\n  blocks 3 {\n")
    code, _, err = run(["render", bad, "--view", "block"], capsys)
    assert code == 1 and "bad.clq:" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = run(["render", junk, "--view", "block"], capsys)
    assert code == 1 and "junk.pt" in err
    code, _, err = run(["render", tmp_path / "missing.pt", "--view", "block"], capsys)
    assert code == 1 and "no such checkpoint" in err


@pytest.mark.parametrize("argv,message", [
    (["--view", "block", "-o", "x.jpeg"], "not .jpeg"),
    (["--view", "schedule", "-o", "x.svg"], "not .svg"),
    (["--view", "network", "-o", "x.json"], "not .json"),
    (["--view", "block", "--block", "4"], "has blocks 1..3"),
    (["--view", "block", "--block", "0"], "has blocks 1..3"),
    (["--view", "network", "--labels"], "--labels"),
    (["--view", "weights"], "-o FILE.png"),
    (["--view", "sideways"], "invalid choice"),
    ([], "--view"),
])
def test_cli_exit_2_for_usage_errors(argv, message, capsys):
    code, _, err = run(["render", SPECS / "cliquenet-cifar.clq"] + argv, capsys)
    assert code == 2 and message in err


def test_registering_render_imports_no_torch_matplotlib_or_graphviz():
    code = ("import sys; from cliquegraph import cli; cli.build_parser(); "
            "import cliquegraph.cli.render; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'graphviz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
