"""The units' compile form (units._Traced) equals the plain ops; the lean units run under
autocast in its dtype; `lower.Compiled` trains as eager does (float64, dropout on, one
compilation); CUDA versions of these run where a GPU is present."""

import copy
import platform

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from cliquegraph import build, elaborate, units
from cliquegraph.lower import Compiled
from test_compiler import _randomise_bn, tiny_spec

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _unit(widths, pool, padding, dtype=torch.float64, device="cpu", seed=0):
    """A BNReLUConv (or BNReLUPool) over inputs `widths` wide, with random BN parameters and
    statistics, its conv weight, and the inputs (NHWC)."""
    g = torch.Generator().manual_seed(seed)
    c = sum(widths)
    bn = units.BNReLUPool(c) if pool else units.BNReLUConv(c, padding)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
    bn = bn.to(device, dtype).train()
    w = None if pool else torch.randn(3, c, 3, 3, generator=g, dtype=dtype).to(device)
    xs = [(torch.randn(2, k, 5, 4, generator=g, dtype=dtype) * 3 + 2).to(device)
          .contiguous(memory_format=torch.channels_last) for k in widths]
    return bn, w, xs


def _run(fn, bn, w, xs):
    """fn's output and the gradients of a fixed function of it for BN's parameters, w and xs."""
    w = None if w is None else w.detach().requires_grad_()
    xs = [x.detach().requires_grad_() for x in xs]
    out = fn(bn, w, xs)
    leaves = [bn.weight, bn.bias, *([] if w is None else [w]), *xs]
    weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64,
                             device=out.device).view(out.shape)
    grads = torch.autograd.grad((out.double() * weights).sum(), leaves)
    return out, grads


def _plain(bn, w, xs):
    """What nn.BatchNorm2d's forward does in training, then ReLU and the conv or pool."""
    bn.num_batches_tracked.add_(1)
    x = torch.cat(xs, 1)
    h = torch.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True,
                                bn.momentum, bn.eps))
    return h.mean((2, 3)) if w is None else F.conv2d(h, w, None, 1, bn.padding)


def _traced(bn, w, xs):
    return units._traced(bn, w, xs, None if w is None else bn.padding)


@settings(max_examples=20, deadline=None)
@given(widths=st.lists(st.integers(1, 4), min_size=1, max_size=3), pool=st.booleans(),
       padding=st.sampled_from([(0, 0), (1, 1)]))
def test_the_compile_form_of_a_unit_equals_the_plain_ops(widths, pool, padding):
    """_Traced (eager here: the ops inductor is given) against cat, BatchNorm, ReLU and conv
    or pool: output, gradients and the running statistics, in float64."""
    bn, w, xs = _unit(widths, pool, padding)
    ref = copy.deepcopy(bn)
    (out, grads), (out_ref, grads_ref) = _run(_traced, bn, w, xs), _run(_plain, ref, w, xs)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref, name), msg=name)


def _autocast_matches_plain(device):
    """Under bf16 autocast the lean Function and the compile form each run a unit in bf16
    and agree with the plain ops under autocast to bf16's precision; gradients of fp32
    parameters and inputs come back fp32."""
    for fn in ("lean", "traced"):
        bn, w, xs = _unit([3, 2], False, (1, 1), torch.float32, device)
        ref = copy.deepcopy(bn)
        calls = []
        real = units._BNReLUConv.forward
        units._BNReLUConv.forward = staticmethod(
            lambda ctx, *a: calls.append(a[-1].dtype) or real(ctx, *a))
        try:
            with torch.autocast(device, torch.bfloat16):
                out, grads = _run((lambda b, v, t: b(v, *t)) if fn == "lean" else _traced,
                                  bn, w, xs)
                out_ref, grads_ref = _run(_plain, ref, w, xs)
        finally:
            units._BNReLUConv.forward = real
        assert calls == ([torch.bfloat16] if fn == "lean" else []), fn
        assert out.dtype == out_ref.dtype == torch.bfloat16
        scale = out_ref.float().abs().max().item()  # bf16 rounds to 1 part in 256 of that
        torch.testing.assert_close(out.float(), out_ref.float(), rtol=2e-2, atol=2e-2 * scale)
        for a, b in zip(grads, grads_ref):
            assert a.dtype == b.dtype == torch.float32
            torch.testing.assert_close(a, b, rtol=3e-2, atol=5e-2 * b.abs().max().item())
        torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-2, atol=1e-2)


def test_units_run_lean_under_autocast():
    _autocast_matches_plain("cpu")


def test_a_network_trains_lean_under_autocast_as_accurately_as_plain(tmp_path, monkeypatch):
    """A whole tiny network under bf16 autocast: the lean units' output and gradients are as
    close to fp32 training's as autocast's plain ops are (bf16 alone moves them a lot in a
    network this small, so the plain ops are the yardstick)."""
    torch.manual_seed(0)
    net = elaborate(tiny_spec(tmp_path, n=3, k=4, dropout="dropout 0.2"))
    lean = build(net).train()
    _randomise_bn(lean)
    plain, fp32 = copy.deepcopy(lean), copy.deepcopy(lean)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    def step(model, amp=True):
        torch.manual_seed(3)  # the same dropout masks in every form
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            out = model(x)
        out.float().square().sum().backward()
        return [out.float(), *(p.grad for p in model.parameters())]

    def error(got, want):
        return max(((a - b).norm() / b.norm()).item() for a, b in zip(got, want))

    truth, got = step(fp32, amp=False), step(lean)
    assert all(g.dtype == torch.float32 for g in got)
    monkeypatch.setattr(units, "_lean", lambda bn, t: False)
    yardstick = step(plain)
    assert error(got, truth) <= 1.25 * error(yardstick, truth)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_keep_freed_memory_tunes_glibc():
    assert units.keep_freed_memory() is True


def test_compiled_training_equals_eager(tmp_path):
    """Two SGD steps of a tiny network with dropout, compiled (inductor drawing its random
    numbers as eager does) and eager, in float64: outputs, gradients, parameters and running
    statistics agree; the second step reuses the first's compilation and the network
    compiles as one graph."""
    from torch._dynamo.utils import counters
    from torch._inductor import config
    net = elaborate(tiny_spec(tmp_path, n=2, k=3, dropout="dropout 0.2",
                              tdropout="dropout 0.2"))
    eager = build(net).double().train()
    _randomise_bn(eager)
    compiled = Compiled(copy.deepcopy(eager))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)

    def step(model, i):
        torch.manual_seed(i)
        out = model(x)
        params = list(model.parameters())
        grads = torch.autograd.grad(out.square().sum(), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(0.1 * g)
        return [out, *grads]

    torch._dynamo.reset()
    counters.clear()
    with config.patch(fallback_random=True):
        for i in range(2):
            got, want = step(compiled, i), step(eager, i)
            if i == 0:
                graphs = counters["stats"]["unique_graphs"]
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert counters["stats"]["unique_graphs"] == graphs == 1
    assert not counters["graph_break"]
    assert compiled.module.state_dict().keys() == eager.state_dict().keys()
    state = compiled.module.state_dict()
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=1e-9, atol=1e-10, msg=k)


# ---- on a GPU (CI has none) -----------------------------------------------------------------

@CUDA
def test_units_run_lean_on_cuda():
    """The lean Function on CUDA tensors (no CPU scratch) equals the plain ops; under bf16
    autocast it runs in bf16."""
    for pool in (False, True):
        bn, w, xs = _unit([3, 2], pool, (1, 1), device="cuda")
        ref = copy.deepcopy(bn)
        (out, grads) = _run(lambda b, v, t: b(*t) if v is None else b(v, *t), bn, w, xs)
        out_ref, grads_ref = _run(_plain, ref, w, xs)
        torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    _autocast_matches_plain("cuda")


@CUDA
def test_compiled_bf16_channels_last_training_on_cuda(tmp_path):
    """A compiled step under bf16 autocast on CUDA agrees with the eager one to bf16's
    precision."""
    net = elaborate(tiny_spec(tmp_path, n=2, k=4))
    eager = build(net).cuda().train()
    compiled = Compiled(copy.deepcopy(eager))
    x = torch.randn(8, 3, 8, 8, device="cuda").contiguous(memory_format=torch.channels_last)

    def step(model):
        with torch.autocast("cuda", torch.bfloat16):
            out = model(x)
        out.float().square().sum().backward()
        return out.float(), [p.grad for p in model.parameters()]

    (out, grads), (out_ref, grads_ref) = step(compiled), step(eager)
    torch.testing.assert_close(out, out_ref, rtol=5e-2, atol=5e-2 * out_ref.abs().max().item())
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2 * b.abs().max().item() + 1e-6)
