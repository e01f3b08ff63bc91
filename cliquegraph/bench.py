"""Bench: one network's training step in five forms, each timed and measured in its own process.

    default         the project's lowering (lower.build)
    compiled        the same module under torch.compile (lower.Compiled), as `--compile` trains
    original_style  the eager module in the original implementation's form (original.OriginalNet)
    naive           the per-edge reference interpreter (reference.NaiveNet)
    conv_floor      only the network's convolutions (and its fc), each on its own preallocated
                    random input: no BN, ReLU or concatenation. What the others are held to.

A step is forward + cross-entropy + backward + SGD (momentum 0.9, Nesterov, weight decay 1e-4)
on one fixed random batch; the figure is the median of `steps` steps after `warmup`. Every
variant runs in a fresh `python -m cliquegraph.bench --worker` (the job as JSON on stdin, one
JSON line back), so its peak is its own and an out-of-memory kill costs one row, not the run.
The peak is that of the steps after the first (the first step compiles the `compiled`
variant; its time and peak are reported apart): on CPU the process's peak resident memory,
reset after the first step where Linux allows it, on CUDA torch.cuda.max_memory_allocated.
On CPU every worker first has glibc keep freed memory (units.keep_freed_memory, as the runner
does; keep_freed_memory=False leaves glibc's defaults, under which a fresh tensor above 32 MB
is page-faulted at every allocation).

The CLI (`cliquegraph bench`, cli/bench.py) prints what `measure` returns.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import ir
from .original import original_from_ir
from .units import AMP_DTYPES, keep_freed_memory

VARIANTS = ("default", "compiled", "original_style", "naive", "conv_floor")
ORIGINAL, FLOOR, COMPILED = "original_style", "conv_floor", "compiled"


# ---- the conv floor ---------------------------------------------------------------------------

def conv_shapes(net) -> list:
    """Every convolution the network runs, and its fc: (kind, input shape without the batch,
    out channels, kernel, stride, padding, bias), and for a grouped conv its groups after
    them. Block updates as the schedule runs them: each conv of the update's unit (the first
    reading the update's inputs concatenated), then with merge add the shortcut's convs of
    an update that reads X_0 through them."""
    from .schedule import schedule
    out = []

    def conv(op, in_shape):
        entry = ("conv", tuple(in_shape), op.out_shape[0], tuple(op.kernel), tuple(op.stride),
                 tuple(op.padding), op.bias)
        groups = getattr(op, "groups", 1)
        out.append(entry + (groups,) if groups != 1 else entry)

    def ops(section):
        for op in section:
            if op.kind == "conv":
                conv(op, op.in_shape)
            elif op.kind == "branches":
                ops(op.leaves())
            elif op.kind == "fc":  # as a 1x1 conv with bias
                out.append((op.kind, tuple(op.in_shape), op.out_shape[0], (1, 1), (1, 1),
                            (0, 0), True))

    for part in ir.parts(net):
        if part.kind != "block":
            ops(part.ops)
            continue
        b = part.block
        g = b.graph
        for u in schedule(b).updates:
            srcs = [l for l, _ in u.inputs]
            unit = b.unit_of(srcs)
            c_in = sum(g.nodes[l]["channels"] for l in srcs)
            for j, op in enumerate(unit.ops):
                if op.kind == "conv":
                    conv(op, (c_in,) + tuple(op.in_shape[1:]) if j == len(unit.pre)
                         else op.in_shape)
                elif op.kind == "branches":
                    ops(op.leaves())
            if b.merge == "add" and 0 in srcs:
                ops(b.shortcut)
    return out


class ConvFloor(nn.Module):
    """The floor: each conv of `conv_shapes` with its own weight, applied to its own random
    input (a buffer, NHWC as the lowering runs them); forward returns the sum of the outputs'
    means. Backward computes each conv's input gradient, as the network must, except the
    network's first conv's, which reads the image."""

    def __init__(self, net, batch: int):
        super().__init__()
        self.shapes = conv_shapes(net)
        first = next(iter(ir.parts(net)))
        self.reads_image = bool(first.ops) and first.ops[0].kind == "conv"
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for j, (kind, shape, c_out, kernel, _, _, bias, *groups) in enumerate(self.shapes):
            w = torch.empty(c_out, shape[0] // (groups or [1])[0],
                            *(kernel if kind == "conv" else ()))
            self.weights.append(nn.Parameter(nn.init.kaiming_normal_(w)))
            self.biases.append(nn.Parameter(torch.zeros(c_out)) if bias else None)
            x = torch.randn(batch, *shape)
            if x.dim() == 4:  # the layout the lowering runs its convs in
                x = x.contiguous(memory_format=torch.channels_last)
            self.register_buffer(f"input{j}", x)

    def forward(self, _x):
        total = 0
        for j, (kind, _, _, _, stride, padding, _, *groups) in enumerate(self.shapes):
            x, w, b = getattr(self, f"input{j}"), self.weights[j], self.biases[j]
            if j > 0 or not self.reads_image:
                x = x.detach().requires_grad_()
            y = (F.conv2d(x, w, b, stride, padding, 1, (groups or [1])[0]) if kind == "conv"
                 else F.linear(x, w, b))
            total = total + y.mean()
        return total


# ---- one variant, in this process (the worker) ----------------------------------------------

def build_variant(variant: str, net, batch: int, memory_efficient: bool = True):
    """(module, whether the default lowering recomputes its concatenations) for a variant of
    `net`."""
    from .lower import Compiled, build
    if variant == "default":
        return build(net, memory_efficient=memory_efficient), memory_efficient
    if variant == COMPILED:
        return Compiled(build(net)), True
    if variant == ORIGINAL:
        return original_from_ir(net), False
    if variant == "naive":
        from .reference import NaiveNet
        return NaiveNet(net, build(net)), False
    if variant == FLOOR:
        return ConvFloor(net, batch), False
    raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")


def _rss_mb() -> float:
    """Resident memory now (MiB); ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _maxrss_mb()


def _maxrss_mb() -> float:
    """This process's peak resident memory (MiB). Linux's VmHWM, not ru_maxrss: ru_maxrss
    survives fork + exec, so a worker started by a large process (a test suite) reported its
    parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def run_variant(job: dict) -> dict:
    """Time and measure one variant in this process. job: spec, overrides, variant, batch,
    steps, warmup, device, threads, memory_efficient, keep_freed_memory, amp."""
    from .elaborate import elaborate

    device = torch.device(job.get("device", "cpu"))
    if device.type == "cpu" and job.get("keep_freed_memory", True):
        keep_freed_memory()
    threads = job.get("threads") or default_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = elaborate(job["spec"], job.get("overrides") or {})
    batch, variant = job["batch"], job["variant"]
    warmup = max(job["warmup"], 1) if variant == COMPILED else job["warmup"]
    model, used_me = build_variant(variant, net, batch, job.get("memory_efficient", True))
    model = model.to(device).train()
    floor = variant == FLOOR
    x = torch.randn(batch, *net.input_shape, device=device)
    y = torch.randint(0, net.outputs, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    cuda = device.type == "cuda"
    amp = AMP_DTYPES.get(job.get("amp"))  # None: off (no grad scaler: the step is timed)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(x)
            loss = out if floor else F.cross_entropy(out, y)
        loss.backward()
        opt.step()

    def peak():
        return torch.cuda.max_memory_allocated(device) / 2**20 if cuda else _maxrss_mb()

    sync()
    if cuda:
        baseline = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline = _rss_mb()
    times, first = [], {}
    for i in range(warmup + job["steps"]):
        t0 = time.perf_counter()
        step()
        sync()
        if i == 0:
            first = {"first_step_s": time.perf_counter() - t0, "first_step_peak_mb": peak()}
            if warmup:  # the steady state's peak from here on
                _reset_peak(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    record = {"step_ms": median * 1e3, "images_per_second": batch / median,
              "baseline_mb": baseline, "step_ms_all": [t * 1e3 for t in times],
              "params": sum(p.numel() for p in model.parameters()), "threads": threads,
              "peak_mb": peak(), **first}
    if variant == COMPILED:
        record["compile_s"] = max(first["first_step_s"] - median, 0.0)
    if cuda:
        record["reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    if variant == "default":
        record["memory_efficient"] = used_me
    return record


def _reset_peak(device) -> None:
    """Start the peak memory over: CUDA's counter, or Linux's peak resident set (VmHWM,
    through /proc/self/clear_refs; where that is refused the peak stays the process's)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _worker() -> int:
    """`python -m cliquegraph.bench --worker`: a job as JSON on stdin, one JSON line out."""
    try:
        result = run_variant(json.loads(sys.stdin.read()))
    except MemoryError:
        result = {"error": "out of memory"}
    except Exception as exc:  # the parent reports it as this variant's failure
        text = str(exc).strip().splitlines()
        msg = text[0] if text else ""
        if "out of memory" in msg.lower():
            msg = f"out of memory ({msg[:200]})"
        result = {"error": f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# ---- the parent: one process per variant -------------------------------------------------------

def failure_reason(returncode: int, stderr: str) -> str:
    """Why a worker gave no result, from its exit status and stderr."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "no output"
    return f"worker exited with status {returncode}: {last[:300]}"


def run_isolated(job: dict, timeout: float | None = None) -> dict:
    """run_variant(job) in a fresh Python process: its record, or {"error": reason}."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, "-m", "cliquegraph.bench", "--worker"],
                              input=json.dumps(job), capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"worker timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    return {"error": failure_reason(proc.returncode, proc.stderr)}


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str, threads: int) -> dict:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def measure(spec, overrides=None, *, variants=VARIANTS, batch=16, steps=5, warmup=2,
            device="cpu", threads=None, memory_efficient=True, timeout=None, rounds=1,
            on_result=None, keep_freed_memory=True, amp="off") -> dict:
    """Bench `variants` of a spec, each in its own process. SpecError for a bad spec; a variant
    that cannot run or whose worker dies gets {"failed": True, "error": reason}.

    With rounds > 1 every variant runs once per round, in a fresh process each time, the order
    reversed every other round, so that a machine whose speed drifts during the run (a shared
    host) does not favour whichever variant ran first; a variant's step_ms is then the median
    of its rounds' medians and peak_mb the largest peak of any round.
    on_result(name, record, round) is called as each run finishes (for progress).
    keep_freed_memory=False leaves glibc's malloc as it is in every worker (on CPU); amp
    "bf16" or "fp16" runs every variant's forward and loss under autocast."""
    from .elaborate import elaborate
    overrides = dict(overrides or {})
    net = elaborate(spec, overrides)          # SpecError here, before any worker starts
    threads = threads or default_threads()
    job = {"spec": os.path.abspath(spec), "overrides": overrides, "batch": batch,
           "steps": steps, "warmup": warmup, "device": device, "threads": threads,
           "memory_efficient": memory_efficient, "keep_freed_memory": keep_freed_memory,
           "amp": amp}
    host = machine(device, threads)           # the load average before we add to it
    runs = {name: [] for name in variants}
    cannot = {}
    if ORIGINAL in runs:
        try:
            with torch.device("meta"):  # shapes only: the check is free
                original_from_ir(net)
        except ValueError as exc:
            cannot[ORIGINAL] = {"error": str(exc), "failed": True}
    for r in range(rounds):
        for name in (variants if r % 2 == 0 else variants[::-1]):
            if name in cannot or any(rec.get("failed") for rec in runs[name]):
                continue
            record = run_isolated(dict(job, variant=name), timeout)
            if "error" in record:
                record["failed"] = True
            runs[name].append(record)
            if on_result:
                on_result(name, record, r)
    results = {name: cannot.get(name) or _merge(runs[name], batch) for name in variants}
    add_ratios(results)
    return {"spec": spec, "network": net.name, "overrides": overrides, "batch": batch,
            "steps": steps, "warmup": warmup, "rounds": rounds, "device": device,
            "threads": threads, "memory_efficient": bool(memory_efficient),
            "keep_freed_memory": bool(keep_freed_memory), "amp": amp,
            "input_shape": list(net.input_shape), "variants": results,
            "machine": host}


def _merge(records: list, batch: int) -> dict:
    """One variant's record from its rounds (a failed round fails the variant)."""
    failed = [r for r in records if r.get("failed")]
    if failed:
        return failed[0]
    if len(records) == 1:
        return records[0]
    merged = dict(records[0])
    step = statistics.median(r["step_ms"] for r in records)
    merged.update(step_ms=step, images_per_second=batch / (step / 1e3),
                  peak_mb=max(r["peak_mb"] for r in records),
                  baseline_mb=statistics.median(r["baseline_mb"] for r in records),
                  step_ms_rounds=[r["step_ms"] for r in records],
                  peak_mb_rounds=[r["peak_mb"] for r in records],
                  step_ms_all=[t for r in records for t in r["step_ms_all"]])
    if "reserved_mb" in merged:
        merged["reserved_mb"] = max(r["reserved_mb"] for r in records)
    if "compile_s" in merged:  # the longest: a cold compile, before inductor's cache holds it
        merged["compile_s"] = max(r["compile_s"] for r in records)
        merged["compile_s_rounds"] = [r["compile_s"] for r in records]
    return merged


def add_ratios(results: dict) -> None:
    """speed_vs_original = original step / step; memory_vs_original = peak / original peak;
    vs_conv_floor = step / conv_floor step (None where a side is missing)."""
    orig = results.get(ORIGINAL, {})
    floor = results.get(FLOOR, {})

    def ratio(a, b):
        return a / b if a and b else None

    for record in results.values():
        if record.get("failed"):
            continue
        record["speed_vs_original"] = ratio(orig.get("step_ms"), record["step_ms"])
        record["memory_vs_original"] = ratio(record["peak_mb"], orig.get("peak_mb"))
        record["vs_conv_floor"] = ratio(record["step_ms"], floor.get("step_ms"))


# ---- the table -------------------------------------------------------------------------------

COLUMNS = ("variant", "step_ms", "images/s", "baseline_mb", "peak_mb", "speed_vs_original",
           "memory_vs_original", "step_vs_conv_floor", "compile_s")


def header(result: dict) -> str:
    m = result["machine"]
    sets = " ".join(f"{k}={v}" for k, v in result["overrides"].items()) or "none"
    me_text = "on" if result["memory_efficient"] else "off"
    lines = [f"spec {result['spec']} ({result['network']}, input "
             f"{'x'.join(map(str, result['input_shape']))})  overrides: {sets}",
             f"batch {result['batch']}  steps {result['steps']} (median, after "
             f"{result['warmup']} warm-up)" + (
                 f" x {result['rounds']} rounds (median of medians; peak: largest)"
                 if result.get("rounds", 1) > 1 else "")
             + f"  device {result['device']}  threads "
             f"{result['threads']}  torch {m['torch']}  memory-efficient: {me_text}"
             + ("" if result.get("keep_freed_memory", True) or result["device"] != "cpu"
                else "  malloc: glibc's defaults")
             + (f"  autocast {result['amp']}" if result.get("amp", "off") != "off" else ""),
             f"CPU {m['cpu']} ({m['cores']} cores" + (
                 f", load average {m['load_average']:.1f} at the start)"
                 if m.get("load_average") is not None else ")")
             + (f"  GPU {m['gpu']}" if "gpu" in m else "")]
    return "\n".join(lines)


def table(result: dict) -> str:
    """The result as a fixed-width table, ratios against original_style and conv_floor."""
    def x(v):
        return f"{v:.2f}x" if v is not None else "-"

    rows = [COLUMNS]
    failed = []
    for name, r in result["variants"].items():
        if r.get("failed"):
            failed.append(f"{name}: failed: {r['error']}")
            rows.append((name, "failed") + ("-",) * (len(COLUMNS) - 2))
            continue
        rows.append((name, f"{r['step_ms']:.1f}", f"{r['images_per_second']:.1f}",
                     f"{r['baseline_mb']:.0f}", f"{r['peak_mb']:.0f}",
                     x(r["speed_vs_original"]), x(r["memory_vs_original"]),
                     x(r["vs_conv_floor"]),
                     f"{r['compile_s']:.1f}" if "compile_s" in r else "-"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS))]
    body = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                      for c, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join([header(result), ""] + body + ([""] + failed if failed else []))


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker())
    sys.exit("usage: python -m cliquegraph.bench --worker  (a job as JSON on stdin); "
             "for benchmarks run `cliquegraph bench SPEC`")
