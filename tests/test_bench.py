"""`cliquegraph bench`: every variant timed and measured in its own process, ratios against the
original form and the conv floor; the original form built from the IR has the spec's parameters."""

import contextlib
import io
import json
import signal

import pytest

from cliquegraph import bench, count_params, elaborate, original
from cliquegraph.cli import main

from conftest import SPECS

CIFAR = str(SPECS / "cliquenet-cifar.clq")
TINY = ["--set", "k=4", "--set", "T=6"]  # two layers per block: Stage II has something to read


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


EAGER = [v for v in bench.VARIANTS if v != bench.COMPILED]
ONE_BLOCK = """network one_block {
  input 3x8x8
  stem { conv 3x3 4 }
  blocks 1 { layers 2  width 3  dropout 0.2 }
  head { bn relu pool global fc 5 }
}
"""


@pytest.fixture(scope="module")
def tiny_result():
    """One bench of a tiny CliqueNet, every eager variant (each a fresh process: ~5 s
    apiece); `compiled` has its own smaller network below (compiling takes the time)."""
    code, out, err = _run(["bench", CIFAR, *TINY, "--batch", "4", "--steps", "2", "--warmup",
                           "1", "--threads", "1", "--variants", ",".join(EAGER), "--json"])
    assert code == 0, err
    return json.loads(out)


def test_every_variant_is_timed_and_measured(tiny_result):
    assert list(tiny_result["variants"]) == EAGER
    for name, r in tiny_result["variants"].items():
        assert not r.get("failed"), (name, r)
        assert r["step_ms"] > 0 and r["peak_mb"] > 0 and r["baseline_mb"] > 0
        assert r["peak_mb"] >= r["baseline_mb"] * 0.9   # ru_maxrss never falls below the start
        assert r["images_per_second"] == pytest.approx(4 / (r["step_ms"] / 1e3))
        assert len(r["step_ms_all"]) == 2
    assert tiny_result["batch"] == 4 and tiny_result["device"] == "cpu"
    assert tiny_result["machine"]["torch"] and tiny_result["machine"]["cpu"]
    assert tiny_result["overrides"] == {"k": "4", "T": "6"}


def test_original_and_naive_train_the_same_parameters(tiny_result):
    v = tiny_result["variants"]
    net = elaborate(CIFAR, {"k": "4", "T": "6"})
    assert v["default"]["params"] == v["original_style"]["params"] == v["naive"]["params"] \
        == count_params(net)


def test_the_compiled_variant_reports_its_compile_time_apart(tmp_path):
    """The first step compiles: its time less a steady step is compile_s; the step time and
    the peak are those of the steps after it; the same parameters as the default."""
    spec = tmp_path / "one.clq"
    spec.write_text(ONE_BLOCK)
    code, out, err = _run(["bench", str(spec), "--batch", "2", "--steps", "2", "--warmup", "0",
                           "--threads", "1", "--variants", "compiled,default", "--json"])
    assert code == 0, err
    result = json.loads(out)
    c, d = result["variants"]["compiled"], result["variants"]["default"]
    assert not c.get("failed") and c["compile_s"] > 0 and len(c["step_ms_all"]) == 2
    assert c["compile_s"] == pytest.approx(c["first_step_s"] - c["step_ms"] / 1e3)
    assert c["first_step_s"] * 1e3 > max(c["step_ms_all"])
    assert c["params"] == d["params"] == count_params(elaborate(spec))
    assert "compile_s" not in d and "first_step_s" in d
    row = next(line for line in bench.table(result).splitlines()
               if line.startswith("compiled "))
    assert row.split()[-1] == f"{c['compile_s']:.1f}"


def test_ratios_are_against_original_and_floor(tiny_result):
    v = tiny_result["variants"]
    d, o, f = v["default"], v["original_style"], v["conv_floor"]
    assert d["speed_vs_original"] == pytest.approx(o["step_ms"] / d["step_ms"])
    assert d["memory_vs_original"] == pytest.approx(d["peak_mb"] / o["peak_mb"])
    assert d["vs_conv_floor"] == pytest.approx(d["step_ms"] / f["step_ms"])
    assert o["speed_vs_original"] == pytest.approx(1.0)


def test_table_has_the_ratio_columns(tiny_result):
    text = bench.table(tiny_result)
    for column in ("step_ms", "images/s", "peak_mb", "speed_vs_original", "memory_vs_original",
                   "step_vs_conv_floor", "compile_s"):
        assert column in text
    for name in EAGER:
        assert f"\n{name} " in text
    assert "batch 4" in text and "threads 1" in text and "torch " in text and "CPU " in text


@pytest.mark.parametrize("spec, params", [
    ("cliquenet-cifar.clq", {}),
    ("cliquenet-cifar.clq", {"attention": "true", "compression": "true"}),
    ("cliquenet-cifar.clq", {"k": "20", "T": "12", "bottleneck": "true", "attention": "true",
                             "compression": "true"}),
    ("s3.clq", {}),
    ("s3.clq", {"attention": "false"}),
])
def test_the_original_form_from_the_ir_has_the_specs_parameters(spec, params):
    import torch
    net = elaborate(SPECS / spec, params)
    with torch.device("meta"):
        model = original.original_from_ir(net)
    assert sum(p.numel() for p in model.parameters()) == count_params(net)


@pytest.mark.parametrize("spec, params, why", [
    ("densenet-cifar.clq", {}, "topology dense"),
    ("cliquenet-stage3.clq", {}, "3 stages"),
    ("cliquenet-cifar.clq", {"steps": "2"}, "steps"),
    ("cliquenet-cifar.clq", {"feature": "stage1", "transit": "stage1"}, "sends stage1"),
])
def test_what_the_original_cannot_express_is_named(spec, params, why):
    with pytest.raises(ValueError, match="original_style cannot express this spec") as err:
        original.original_config(elaborate(SPECS / spec, params))
    assert why in str(err.value)


def test_an_unsupported_spec_fails_original_style_with_the_reason():
    code, out, err = _run(["bench", str(SPECS / "densenet-cifar.clq"), "--variants",
                           "original_style", "--batch", "2", "--steps", "1"])
    assert code == 1  # the only variant failed
    assert "original_style: failed: original_style cannot express this spec: block 1 has " \
           "topology dense" in out
    assert "Traceback" not in out + err


def test_a_bad_spec_is_a_spec_error(tmp_path):
    bad = tmp_path / "bad.clq"
    bad.write_text("network broken {\n  input 3x32x32\n  blocks 1 { layers 0 }\n")
    code, out, err = _run(["bench", str(bad), "--steps", "1"])
    assert code == 1 and "bad.clq" in err and "Traceback" not in err


def test_autocast_and_glibc_defaults_are_options():
    """--amp bf16 runs the step under autocast (the lean units in bf16); --no-keep-freed-memory
    leaves glibc as it is; both are in the header."""
    code, out, err = _run(["bench", CIFAR, *TINY, "--batch", "2", "--steps", "1", "--warmup",
                           "0", "--threads", "1", "--variants", "default", "--amp",
                           "bf16", "--no-keep-freed-memory"])
    assert code == 0, err
    assert "autocast bf16" in out and "malloc: glibc's defaults" in out
    assert "failed" not in out


def test_unknown_variant_is_a_usage_error():
    code, _, err = _run(["bench", CIFAR, "--variants", "default,fastest"])
    assert code == 2 and "fastest" in err


def test_a_killed_worker_is_reported_not_raised():
    assert "SIGKILL (out of memory?)" in bench.failure_reason(-signal.SIGKILL, "")
    assert "boom" in bench.failure_reason(1, "Traceback ...\nRuntimeError: boom\n")
    result = bench.run_isolated({"spec": "/nonexistent.clq", "variant": "default", "batch": 1,
                                 "steps": 1, "warmup": 0, "threads": 1})
    assert "error" in result and "nonexistent" in result["error"]


def test_conv_floor_runs_every_update_of_the_schedule():
    from cliquegraph.schedule import schedule
    net = elaborate(CIFAR, {"k": "4", "T": "6"})
    updates = sum(len(schedule(b).updates) for b in net.blocks)
    # stem conv, one conv per update, one conv per transition, the fc
    assert len(bench.conv_shapes(net)) == 1 + updates + len(net.transitions) + 1


def test_conv_floor_computes_the_input_gradients_the_network_needs():
    """Every conv's backward computes its input's gradient (the network's must), except the
    first one's, which reads the image; the floor's inputs are NHWC as the lowering's are."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    net = elaborate(CIFAR, {"k": "4", "T": "6"})
    floor = bench.ConvFloor(net, 2)
    masks = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution_backward.default:
                masks.append(bool(args[-1][0]))
            return func(*args, **(kwargs or {}))

    with Record():
        floor(None).backward()
    convs = sum(1 for shape in floor.shapes if shape[0] == "conv")
    assert floor.reads_image and masks == [True] * (convs - 1) + [False]
    inputs = [b for b in floor.buffers() if b.dim() == 4]
    assert len(inputs) == convs
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b in inputs)


def test_rounds_alternate_fresh_processes_and_take_the_median(monkeypatch):
    """--rounds R: each variant once per round, order reversed every other round; step_ms is
    the median of the rounds' medians, peak_mb the largest peak."""
    calls = []
    fake = {("default", 0): 30.0, ("default", 1): 10.0, ("default", 2): 20.0,
            ("conv_floor", 0): 5.0, ("conv_floor", 1): 7.0, ("conv_floor", 2): 6.0}

    def run_isolated(job, timeout=None):
        name = job["variant"]
        r = sum(1 for c in calls if c == name)
        calls.append(name)
        step = fake[(name, r)]
        return {"step_ms": step, "images_per_second": 4 / (step / 1e3), "baseline_mb": 100.0,
                "peak_mb": 200.0 + step, "step_ms_all": [step], "params": 1, "threads": 1}

    monkeypatch.setattr(bench, "run_isolated", run_isolated)
    seen = []
    result = bench.measure(CIFAR, {"k": "4", "T": "6"}, variants=["default", "conv_floor"],
                           batch=4, rounds=3, on_result=lambda n, rec, r: seen.append((n, r)))
    assert calls == ["default", "conv_floor", "conv_floor", "default", "default", "conv_floor"]
    assert seen == [("default", 0), ("conv_floor", 0), ("conv_floor", 1), ("default", 1),
                    ("default", 2), ("conv_floor", 2)]
    d = result["variants"]["default"]
    assert d["step_ms"] == 20.0 and d["step_ms_rounds"] == [30.0, 10.0, 20.0]
    assert d["peak_mb"] == 230.0 and d["images_per_second"] == pytest.approx(200.0)
    assert d["vs_conv_floor"] == pytest.approx(20.0 / 6.0)
    assert result["rounds"] == 3 and "3 rounds" in bench.table(result)


def test_a_workers_peak_is_its_own_not_its_large_parents():
    """ru_maxrss survives fork + exec: a worker started by a 600 MB process said 600 MB."""
    import subprocess
    import sys
    ballast = bytearray(600 * 2 ** 20)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # touch every page
    code = "from cliquegraph import bench; print(bench._maxrss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    del ballast
    assert float(out) < 400


def test_conv_floor_lists_the_convs_of_each_update_s_unit():
    """Cat blocks: the first conv reads the update's inputs (the W_ij concatenated), then the
    bottleneck unit's 3x3; as before units were written in specs."""
    from cliquegraph.schedule import schedule
    net = elaborate(CIFAR, {"k": "4", "T": "12", "bottleneck": "true"})
    b = net.blocks[0]
    hw = tuple(b.in_shape[1:])
    want = []
    for u in schedule(b).updates:
        c_in = sum(b.graph.nodes[l]["channels"] for l, _ in u.inputs)
        want += [("conv", (c_in,) + hw, 4, (1, 1), (1, 1), (0, 0), False),
                 ("conv", (4,) + hw, 4, (3, 3), (1, 1), (1, 1), False)]
    shapes = bench.conv_shapes(net)
    assert shapes[1:1 + len(want)] == want  # after the stem's conv


@pytest.mark.parametrize("spec", ["resnet-cifar.clq", "preact-resnet.clq", "resnext-cifar.clq",
                                  "pyramidnet-cifar.clq"])
def test_conv_floor_runs_the_convs_the_lowering_runs(spec):
    """Residual units as written (strided first convs, grouped convs) and the shortcuts'
    convs: the same convs, with the same outputs, strides and groups, as the unfused
    lowering's graph."""
    import torch
    from torch import nn
    from cliquegraph.lower import lower
    net = elaborate(SPECS / spec)
    with torch.device("meta"):
        gm = lower(net, fused=False)
    runs = []
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is torch.conv2d:
            runs.append(("conv", n.meta["op"].out_shape[0], tuple(n.args[3]), n.args[6]))
        elif n.op == "call_module":
            m = gm.get_submodule(n.target)
            if isinstance(m, nn.Conv2d):
                runs.append(("conv", m.out_channels, tuple(m.stride), m.groups))
            elif isinstance(m, nn.Linear):
                runs.append(("fc", m.out_features, (1, 1), 1))
    listed = [(s[0], s[2], s[4], s[7] if len(s) > 7 else 1) for s in bench.conv_shapes(net)]
    assert sorted(listed) == sorted(runs)


def test_conv_floor_runs_grouped_convs():
    """ResNeXt's grouped 3x3s: the floor's weights are the network's convs' and fc's, all
    its parameters but the BNs' (as many as their running statistics)."""
    import torch
    from cliquegraph.lower import lower
    net = elaborate(SPECS / "resnext-cifar.clq")
    floor = bench.ConvFloor(net, 1)
    assert any(len(s) == 8 and s[7] > 1 for s in floor.shapes)
    floor(None).backward()
    with torch.device("meta"):
        bn = sum(t.numel() for name, t in lower(net).named_buffers() if "running" in name)
    assert sum(p.numel() for p in floor.parameters()) == count_params(net) - bn
