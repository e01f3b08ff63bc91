"""The training memory estimate: what a step of the lowering really holds, from the IR alone,
before anything is built; a run that cannot fit is refused with a batch that would."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from cliquegraph import count_params, elaborate
from cliquegraph.cli import main
from cliquegraph.estimate import (GiB, MemoryEstimateError, available_memory, check_fits,
                                  estimate_memory, gib)

from conftest import SPECS

CIFAR = str(SPECS / "cliquenet-cifar.clq")
ROOT = SPECS.parent


def cifar(**params):
    return elaborate(CIFAR, {k: str(v) for k, v in params.items()})


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_the_estimate_grows_with_the_batch_and_with_k():
    net = cifar(k=36, T=12)
    totals = [estimate_memory(net, b).total for b in (1, 2, 8, 64, 256)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    totals = [estimate_memory(cifar(k=k, T=12), 64).total for k in (12, 24, 36, 64)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    for b in (1, 64):  # keeping the concatenations costs more
        assert estimate_memory(net, b, memory_efficient=False).total > \
            estimate_memory(net, b).total


def test_weights_gradients_and_momentum_are_the_parameter_count_times_their_bytes():
    for net in (cifar(k=36, T=12), elaborate(SPECS / "s3.clq"),
                elaborate(SPECS / "densenet-cifar.clq", {"bc": "true"})):
        n = count_params(net)
        est = estimate_memory(net, 16)
        assert est.params == n
        assert est.weights == est.gradients == est.optimizer == 4 * n
        assert estimate_memory(net, 16, momentum=0).optimizer == 0
        assert estimate_memory(net, 16, dtype_bytes=8).weights == 8 * n
        assert estimate_memory(net, 16, ddp=True).gradients == 8 * n  # DDP's buckets


def test_the_terms_add_up_to_the_total_at_any_batch():
    est = estimate_memory(cifar(k=36, T=12), 64)
    for b in (1, 7, 64, 1000):
        e = est.at(b)
        assert e == estimate_memory(cifar(k=36, T=12), b)
        assert e.total == (e.runtime + e.weights + e.gradients + e.optimizer + e.buffers
                           + e.activations + e.weight_copies + e.workspace + e.overhead)
        assert min(e.activations, e.workspace, e.overhead) > 0


def test_bn_statistics_are_the_lowered_module_s_running_buffers():
    torch = pytest.importorskip("torch")
    from cliquegraph.lower import lower
    for net in (cifar(k=12, T=6, bottleneck="true", attention="true"),
                elaborate(SPECS / "s3.clq")):
        with torch.device("meta"):
            gm = lower(net)
        running = sum(b.numel() for name, b in gm.named_buffers() if "running" in name)
        assert estimate_memory(net, 4).buffers == 4 * running


def test_the_estimate_is_within_a_quarter_of_a_measured_step():
    """One step after one warm-up, in a fresh process (ru_maxrss, as `cliquegraph bench`)."""
    from cliquegraph import bench
    net = cifar(k=12, T=6)
    job = {"spec": CIFAR, "overrides": {"k": "12", "T": "6"}, "batch": 32, "steps": 1,
           "warmup": 1, "device": "cpu", "threads": 1, "variant": "default"}
    measured = bench.run_isolated(job, timeout=120)
    assert "error" not in measured, measured
    ratio = estimate_memory(net, 32).total / (measured["peak_mb"] * 2 ** 20)
    assert 0.8 <= ratio <= 1.25, ratio


def test_k1024_t12_is_refused_at_once_without_building_anything():
    """Issue 10: 678M parameters passed `check`, trained 200 s and died in the allocator."""
    code = ("import sys, time\n"
            "t = time.perf_counter()\n"
            "from cliquegraph import elaborate\n"
            "from cliquegraph.estimate import MemoryEstimateError, check_fits, estimate_memory\n"
            f"net = elaborate({CIFAR!r}, {{'k': '1024', 'T': '12'}})\n"
            "try:\n"
            "    check_fits(estimate_memory(net, 64), 6 * 2 ** 30)\n"
            "except MemoryEstimateError as err:\n"
            "    print(err)\n"
            "    print(time.perf_counter() - t, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    message, timing = r.stdout.strip().splitlines()
    seconds, torch_loaded = timing.split()
    assert torch_loaded == "False"  # nothing could have been allocated
    # "at once" against the 200 s it trained before; about 0.5 s with the imports here, and
    # over 1 s when the machine is busy: the bound is for a refusal that waits on nothing
    assert float(seconds) < 5.0
    assert "6.0 GiB available" in message and "Not even batch 1 fits" in message
    assert "--ignore-memory-estimate" in message


def test_the_refusal_names_the_estimate_the_memory_and_the_largest_batch_that_fits():
    est = estimate_memory(cifar(k=36, T=12), 64)
    available = est.at(20).total + est.per_image // 2
    with pytest.raises(MemoryEstimateError) as info:
        check_fits(est, available)
    err = info.value
    assert err.largest_batch == 20 == est.largest_batch(available)
    assert est.at(20).total <= available < est.at(21).total
    text = str(err)
    assert "\n" not in text
    assert f"about {gib(est.total)}" in text and f"{gib(available)} available" in text
    assert "--batch-size 20 or less" in text and "--ignore-memory-estimate" in text
    assert "activations" in text and "at batch 64" in text
    # torchrun: the suggestion is the total --batch-size, each process gets its share on CPU
    with pytest.raises(MemoryEstimateError) as info:
        check_fits(est.at(32), 2 * available, processes=2, world_size=2)
    assert info.value.largest_batch == 40 and "--batch-size 40 or less" in str(info.value)


def test_the_readme_main_job_fits_comfortably():
    net = cifar(k=12, T=6, dropout=0.0)  # the digits recipe: batch 64, no dropout
    est = estimate_memory(net, 64)
    assert est.total < 1 * GiB
    assert check_fits(est, 2 * GiB) == 2 * GiB
    assert est.largest_batch(2 * GiB) > 300


def test_available_memory_is_a_positive_byte_count():
    avail = available_memory("cpu")
    assert isinstance(avail, int) and avail > 0
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as fh:
            total = int(next(line for line in fh if line.startswith("MemTotal:")).split()[1])
        assert avail <= total * 1024


def test_compile_prints_the_estimate_under_the_table():
    code, out, err = _run(["compile", CIFAR, "--set", "k=12", "--set", "T=6"])
    assert code == 0, err
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("training memory"))
    assert lines[at - 1].startswith("total")
    assert "batch 64" in lines[at] and "recipes' batch" in lines[at]
    assert "about " in lines[at + 1] and "available" in lines[at + 1]
    code, out, err = _run(["compile", CIFAR, "--set", "k=12", "--set", "T=6", "--batch", "8",
                           "--summary", "json"])
    assert code == 0, err
    memory = json.loads(out)["memory"]
    net = cifar(k=12, T=6)
    want = estimate_memory(net, 8)
    assert memory["batch"] == 8 and memory["total"] == want.total
    assert memory["weights"] == 4 * count_params(net)
    assert memory["fits"] is True and memory["largest_batch"] > 8 and memory["available"] > 0


def test_compile_says_when_training_would_be_refused():
    code, out, err = _run(["compile", CIFAR, "--set", "k=4", "--set", "T=3", "--batch",
                           "100000000"])
    assert code == 0, err
    assert "too much: training would be refused; batch" in out


def test_a_cgroup_limit_lowers_the_memory_available(tmp_path):
    from cliquegraph.estimate import _cgroup_room
    listing = tmp_path / "cgroup"
    listing.write_text("0::/job\n")
    group = tmp_path / "fs" / "job"
    group.mkdir(parents=True)
    (group / "memory.max").write_text(f"{2 ** 30}\n")
    (group / "memory.current").write_text(f"{2 ** 28}\n")
    assert _cgroup_room(str(tmp_path / "fs"), str(listing)) == 3 * 2 ** 28
    (group / "memory.max").write_text("max\n")
    assert _cgroup_room(str(tmp_path / "fs"), str(listing)) is None
    v1 = tmp_path / "v1"
    (v1 / "memory" / "job").mkdir(parents=True)
    (v1 / "memory" / "job" / "memory.limit_in_bytes").write_text(f"{2 ** 31}\n")
    (v1 / "memory" / "job" / "memory.usage_in_bytes").write_text(f"{2 ** 30}\n")
    listing.write_text("4:memory:/job\n0::/\n")
    assert _cgroup_room(str(v1), str(listing)) == 2 ** 30


# ---- units written in the spec, residual blocks ---------------------------------------------

RESNET = SPECS / "resnet-cifar.clq"


def _saved_for_backward(net, batch):
    """Bytes one forward of the default lowering keeps for backward, each storage once
    (parameters and buffers aside), plus the input batch the loop holds: the figure the
    estimate's activations term stands for."""
    torch = pytest.importorskip("torch")
    from cliquegraph.lower import build
    torch.manual_seed(0)
    gm = build(net)
    own = {t.untyped_storage().data_ptr() for t in [*gm.parameters(), *gm.buffers()]}
    seen, held = {}, []

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
            held.append(t)  # alive until counted: no address is reused
        return t

    x = torch.randn(batch, *net.input_shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        gm(x)
    return sum(seen.values()) + x.numel() * 4


def test_a_written_default_unit_is_estimated_as_the_default_unit():
    """The walk follows the unit's ops, not the block's kernel and bottleneck attributes:
    `unit { bn relu conv 1x1 K bn relu conv 3x3 K }` is the bottleneck block's unit."""
    text = (SPECS / "cliquenet-cifar.clq").read_text()
    unit = ("    topology clique\n    unit {\n      bn\n      relu\n      conv 1x1 K\n      bn\n"
            "      relu\n      conv 3x3 K\n    }\n")
    written = elaborate("<spec>", {"k": "12", "T": "6"},
                        text=text.replace("    topology clique\n", unit), includes=False)
    default = cifar(k=12, T=12, bottleneck="true")
    assert written.blocks[0].unit == default.blocks[0].unit
    for options in ({}, {"memory_efficient": False}, {"device": "cuda", "amp": "bf16"}):
        assert estimate_memory(written, 16, **options) == estimate_memory(default, 16,
                                                                          **options)


def test_a_residual_network_is_estimated_from_its_units():
    """resnet-cifar: merge add with a post relu; blocks 2 and 3 open with a strided unit
    whose X_0 goes through the conv 1x1 + bn shortcut."""
    torch = pytest.importorskip("torch")
    from cliquegraph.lower import lower
    net = elaborate(RESNET)
    b = net.blocks[1]
    assert b.merge == "add" and b.stride == 2 and b.shortcut and b.post
    totals = [estimate_memory(net, batch).total for batch in (1, 2, 8, 64, 256)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    est = estimate_memory(net, 16)
    n = count_params(net)
    assert est.params == n and est.weights == est.gradients == est.optimizer == 4 * n
    assert min(est.activations, est.workspace, est.overhead) > 0
    with torch.device("meta"):
        gm = lower(net)
    running = sum(t.numel() for name, t in gm.named_buffers() if "running" in name)
    assert est.buffers == 4 * running


@pytest.mark.parametrize("spec, params, batch", [
    ("resnet-cifar.clq", {}, 4),                             # post relu, conv + bn shortcut
    ("preact-resnet.clq", {"depth": "18"}, 1),               # shortcut_from pre
    ("pyramidnet-cifar.clq", {"depth": "20"}, 4),            # one-layer blocks, pad shortcut
    ("wrn-cifar.clq", {"depth": "10", "widen": "2"}, 4),     # a shortcut where stride is 1
])
def test_a_residual_network_s_activations_are_what_its_step_keeps(spec, params, batch):
    """Chains with merge add keep no concatenation and no concatenated W_ij, so what the
    forward saves for backward is the activations term itself: measured here 0.999-1.000
    of it (ResNet-20, PreAct-18, PyramidNet, WRN, ResNet-50 and ResNeXt-29 too)."""
    net = elaborate(SPECS / spec, params)
    ratio = estimate_memory(net, batch).activations / _saved_for_backward(net, batch)
    assert 0.97 <= ratio <= 1.03, ratio


def test_a_residual_network_is_within_a_quarter_of_a_measured_step():
    """As the CliqueNet check above: ResNet-20 measured here 1.05-1.11 of the peak at batch
    16-256 (ResNet-56, WRN-16-4, PyramidNet-110, PreAct-18 and ResNet-50: 0.995-1.16), the
    calibration's band (0.99-1.20)."""
    from cliquegraph import bench
    job = {"spec": str(RESNET), "overrides": {}, "batch": 64, "steps": 1, "warmup": 1,
           "device": "cpu", "threads": 1, "variant": "default"}
    measured = bench.run_isolated(job, timeout=120)
    assert "error" not in measured, measured
    ratio = estimate_memory(elaborate(RESNET), 64).total / (measured["peak_mb"] * 2 ** 20)
    assert 0.8 <= ratio <= 1.25, ratio
