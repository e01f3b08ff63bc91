"""The runner: train a compiled spec on a dataset with the paper's recipe, resumably.

    cfg = TrainConfig(spec="specs/cliquenet-cifar.clq", params={"k": "12", "T": "6"},
                      dataset="digits", out="runs/digits")
    run = train(cfg)            # run.model: the trained GraphModule, run.metrics: one dict/epoch

Everything a run leaves is in `out`: recipe.json, metrics.jsonl (one object per epoch), last.pt
and best.pt (checkpoints written atomically at the end of every epoch) and curves.png (loss and
error per epoch, as the paper's Figure 3).

Resuming is exact: a resumed run computes the same numbers as one that was never stopped. That
rests on three things: the order of epoch e comes from (seed, e) alone, and the DataLoader
workers' crops and flips from (seed, e, rank), never from how many epochs this process has run;
the checkpoint holds every process's RNG state (dropout) and the optimizer, scheduler and grad
scaler states; and a checkpoint is only ever complete (temp file + rename), so a kill at any
moment loses at most the epoch in progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoint
from ..atomic import write_atomic, write_text_atomic
from ..elaborate import elaborate
from ..lower import Compiled, build
from ..units import AMP_DTYPES, keep_freed_memory
from . import distributed
from .data import check_classes, load
from ..atomic import stale_temps
from ..errors import UserError, plural
from ..estimate import check_fits, estimate_memory, gib
from .recipes import Recipe, describe, recipe_for


class TrainError(UserError):
    """A run that cannot start or go on (a clash with --out, a failed write): a message for
    users, printed by the CLI."""


@dataclass
class TrainConfig:
    spec: str                          # .clq file
    dataset: str | None                # one of data.DATASETS; None: the checkpoint's (--resume)
    params: dict = field(default_factory=dict)     # --set overrides, .clq text
    data_dir: str | None = None        # None: ./data (digits needs none)
    out: str | None = None             # None: runs/<network>-<dataset>
    recipe: dict = field(default_factory=dict)     # overrides of the dataset's preset
    resume: bool = False
    amp: str = "off"                   # bf16 | fp16 | off (CUDA only)
    compile: bool = False              # torch.compile the module
    channels_last: bool = True         # NHWC activations (the compiler's default)
    memory_efficient: bool = True   # recompute cat + BN-ReLU in backward (the default)
    workers: int = 4                   # DataLoader workers (ImageNet; in-memory sets need none)
    seed: int | None = None            # None: 0, or the run's own when resuming
    threads: int | None = None         # torch's CPU threads; None: leave torch's choice
    ignore_memory_estimate: bool = False   # train even when the estimate says it cannot fit
    device: str = "cpu"
    stop_after: int | None = None      # stop after this epoch; --resume goes on from there
    progress: bool | None = None       # a bar per epoch; None: when stderr is a terminal


@dataclass
class Run:
    model: torch.nn.Module             # the trained GraphModule (not the DDP/compiled wrapper)
    metrics: list                      # one dict per epoch, as metrics.jsonl
    out: Path


def default_out(network: str, dataset: str) -> Path:
    return Path("runs") / f"{network}-{dataset}"


def train(cfg: TrainConfig) -> Run:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world, device = distributed.setup(cfg.device)
    clean = False
    try:
        run = _train(cfg, world, device)
        clean = True
        return run
    finally:
        distributed.teardown(clean)


@dataclass
class _Plan:
    """What a run is, settled before anything is built: from the config, and from the run in
    `out` when resuming."""
    net: object
    out: Path
    state: dict | None                 # the checkpoint resumed from
    source: Path | None                # its file
    dataset: str
    data_dir: str | None
    seed: int
    recipe: Recipe
    batch: int                         # per process
    amp: str
    settings: dict                     # what a resume may change (resumes.jsonl)
    resumed: dict | None               # the changes of this resume


def _train(cfg: TrainConfig, world, device) -> Run:
    log = _Log(world.main)
    plan = _plan(cfg, world, device, log)
    net, out, state, source, recipe = plan.net, plan.out, plan.state, plan.source, plan.recipe
    train_set = load(plan.dataset, plan.data_dir, input_shape=net.input_shape, train=True)
    test_set = load(plan.dataset, plan.data_dir, input_shape=net.input_shape, train=False)
    check_classes(train_set, net.outputs, net=net)

    torch.manual_seed(plan.seed)  # the initial weights: the same on every process
    gm = build(net, channels_last=cfg.channels_last, memory_efficient=cfg.memory_efficient)
    if state:
        checkpoint.load_state(gm, state["state_dict"], source)
    gm.to(device)
    optimizer, scheduler, scaler = _optimizer(gm, plan, world, device, log)
    metrics = list(state["metrics"]) if state else []
    start = state["epoch"] if state else 0
    model = gm
    if world.size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            gm, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = Compiled(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:  # every step frees and reallocates the same sizes: serve them from the heap
        keep_freed_memory()

    batches = _Batches(train_set, plan.batch, world, device, plan.seed, cfg.workers)
    test_batches = _Batches(test_set, plan.batch, world, device, plan.seed, cfg.workers,
                            shuffle=False)
    autocast = dict(device_type=device.type, enabled=plan.amp in AMP_DTYPES,
                    dtype=AMP_DTYPES.get(plan.amp))
    progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    base = checkpoint.payload(gm) if world.main else {}
    base.update(dataset=plan.dataset, data_dir=plan.settings["data_dir"],
                recipe=recipe.to_json(), seed=plan.seed, amp=plan.amp, settings=plan.settings)

    log(f"{net.name} ({sum(p.numel() for p in gm.parameters()):,} params) on {plan.dataset}: "
        f"{len(train_set):,} train / {len(test_set):,} test images, {device}"
        + (f" x {world.size} processes" if world.size > 1 else "")
        + (f", amp {plan.amp}" if plan.amp != "off" else "")
        + (", compiled" if cfg.compile else "") + ("" if cfg.channels_last else ", NCHW"))
    log(f"recipe: {describe(recipe)}")
    if world.main:
        try:
            with _interrupts_wait():
                _write_files(out, recipe, metrics)
                if plan.resumed is not None:
                    _record_resume(out, start, source, plan.resumed)
        except OSError as err:
            raise TrainError(f"cannot write to {out}: {err.strerror or err}") from None
    if start:
        log(f"resuming after epoch {start} from {source}" if start < recipe.epochs else
            f"{source} has finished all {plural(recipe.epochs, 'epoch')}: nothing to do "
            "(more with --epochs)")

    for epoch in range(start + 1, recipe.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        bar = (_bar(epoch, recipe.epochs, batches.count(epoch)) if progress and world.main
               else None)
        train_loss, seen = _train_epoch(model, optimizer, scaler, batches.epoch(epoch),
                                        autocast, device, bar)
        train_seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise TrainError(f"training diverged in epoch {epoch} (the loss is {train_loss}); "
                             f"try a lower --lr than {lr:g}")
        scheduler.step()
        # Evaluation runs the bare module: the processes' shards of the test set may differ by
        # a batch, and DDP's forward is a collective. Rank 0's BN statistics are broadcast
        # first, so every process evaluates (and rank 0 saves) the same network.
        distributed.sync_buffers(gm)
        test = evaluate(gm, test_batches, autocast)
        row = {"epoch": epoch, "train_loss": train_loss / seen, "test_loss": test["loss"],
               "test_acc": test["accuracy"], "lr": lr,
               "seconds": time.perf_counter() - t0,
               "images_per_second": seen / train_seconds}
        metrics.append(row)
        log(f"epoch {epoch}/{recipe.epochs}  train loss {row['train_loss']:.4f}  test loss "
            f"{row['test_loss']:.4f}  test acc {100 * row['test_acc']:.2f}%  lr {lr:g}  "
            f"{row['seconds']:.1f}s  {row['images_per_second']:.0f} img/s")

        ckpt = {**base, "state_dict": gm.state_dict(), "epoch": epoch, "metrics": metrics,
                "optimizer": optimizer.state_dict(),
                "scheduler": {k: v for k, v in scheduler.state_dict().items()
                              if k != "milestones"},  # from the recipe; a Counter besides
                "scaler": scaler.state_dict(),
                "rng": distributed.gather(_rng_state(device))}
        _save_epoch(ckpt, plan, metrics, world, device)
        if cfg.stop_after is not None and epoch >= cfg.stop_after and epoch < recipe.epochs:
            log(f"stopping after epoch {epoch} (--stop-after); --resume continues")
            break
    if metrics:  # best.pt holds the latest of equally good epochs
        top = max(reversed(metrics), key=lambda m: m["test_acc"])
        log(f"best test accuracy {100 * top['test_acc']:.2f}% after epoch {top['epoch']} "
            f"(best.pt); the run is in {out}")
    return Run(gm, metrics, out)


def _optimizer(gm, plan: _Plan, world, device, log):
    """The recipe's SGD, its per-epoch lr schedule and the fp16 grad scaler, restored from the
    checkpoint when resuming (with every process's RNG state)."""
    recipe, state = plan.recipe, plan.state
    optimizer = torch.optim.SGD(gm.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    # Stepped once per epoch: milestones count epochs.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones),
                                                     gamma=recipe.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=plan.amp == "fp16")
    torch.manual_seed(_mix(plan.seed, 0, world.rank))  # dropout: a stream of its own per process
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _restore_rng(state["rng"], world, device, log)
    return optimizer, scheduler, scaler


def _plan(cfg: TrainConfig, world, device, log) -> _Plan:
    """The run `cfg` asks for, checked against the run in its folder (when resuming) and
    against the memory the machine has, before any data is read or module built."""
    net = elaborate(cfg.spec, cfg.params)
    if cfg.out is None and cfg.dataset is None:
        raise TrainError("which run? give --out DIR (or --train DATASET for the default folder)")
    out = Path(cfg.out) if cfg.out else default_out(net.name, cfg.dataset)
    if world.main:
        _remove_stale_temps(out, log)
    state, source = _open_run(out, cfg.resume, log)

    dataset = cfg.dataset or (state or {}).get("dataset")
    if dataset is None:
        raise TrainError("which dataset? give --train DATASET")
    if state and dataset != state["dataset"]:
        raise TrainError(f"{source} was trained on {state['dataset']}, not {dataset}")
    seed = cfg.seed if cfg.seed is not None else (state or {}).get("seed", 0)
    data_dir = None if dataset == "digits" else (
        cfg.data_dir or (state or {}).get("data_dir") or "data")
    recipe = _recipe(cfg, dataset, state, source, log)
    params = recipe.spec_params(net, cfg.params)
    if params != cfg.params:
        net = elaborate(cfg.spec, params)
    if recipe.batch_size % world.size:
        raise TrainError(f"batch {recipe.batch_size} does not split over {world.size} "
                         f"processes; give a --batch-size divisible by {world.size}")
    batch = recipe.batch_size // world.size
    amp = cfg.amp
    if amp != "off" and device.type != "cuda":
        log.note(f"--amp {amp} needs CUDA; training in fp32 on {device.type}")
        amp = "off"
    memory = estimate_memory(net, batch, device=device.type, amp=amp,
                             memory_efficient=cfg.memory_efficient,
                             channels_last=cfg.channels_last, compiled=cfg.compile,
                             momentum=recipe.momentum, ddp=world.size > 1)
    if cfg.ignore_memory_estimate:
        log.note(f"training memory: about {gib(memory.total)} (not checked: "
                 "--ignore-memory-estimate)")
    else:  # refuse now rather than after hours, at the allocator's traceback
        check_fits(memory, processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1),
                   world_size=world.size)
    settings = {"device": device.type, "processes": world.size, "workers": cfg.workers,
                "compile": cfg.compile, "channels_last": cfg.channels_last,
                "memory_efficient": cfg.memory_efficient,
                "data_dir": data_dir and os.path.abspath(data_dir)}
    resumed = _resume_changes(state, source, net, seed, amp, settings, log) if state else None
    if resumed is not None and recipe.epochs != state["recipe"].get("epochs"):
        resumed["epochs"] = [state["recipe"].get("epochs"), recipe.epochs]
    return _Plan(net, out, state, source, dataset, data_dir, seed, recipe, batch, amp,
                 settings, resumed)


def _train_epoch(model, optimizer, scaler, batches, autocast, device, bar):
    """One pass over the training batches: (the loss summed over all processes' images,
    how many images they saw)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for step, (x, y) in enumerate(batches):
        with torch.autocast(**autocast):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach() * len(y)
        seen += len(y)
        if bar is not None:
            bar.update(len(y))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    return distributed.all_sum([loss_sum.item(), seen], device)


def _save_epoch(ckpt, plan: _Plan, metrics, world, device) -> None:
    """Rank 0 writes the epoch's checkpoints (best.pt when it is the best so far, then
    last.pt) and metrics; a failure anywhere stops every process with what is still intact."""
    out, epoch = plan.out, ckpt["epoch"]
    last = out / "last.pt"
    error = None
    if world.main:
        best = max(m["test_acc"] for m in metrics) == metrics[-1]["test_acc"]
        try:  # best.pt first: a kill between the two redoes this epoch, rewriting both
            with _interrupts_wait():
                if best:
                    checkpoint.save_atomic(ckpt, out / "best.pt")
                checkpoint.save_atomic(ckpt, last)
                _write_files(out, plan.recipe, metrics)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as Runtime
            error = err
    if not distributed.all_ok(error is None, device):
        kept = (f"the checkpoint of epoch {epoch - 1} in "
                f"{last if last.is_file() else plan.source} is intact" if epoch > 1
                else "no checkpoint was written")
        reason = (f": {error.strerror or error}" if isinstance(error, OSError)
                  else f": {error}" if error else " (on rank 0)")
        raise TrainError(f"cannot write the checkpoint of epoch {epoch} to {out}{reason}; "
                         f"{kept}. Free some space or fix the folder, then run the same "
                         "command with --resume.")


@torch.no_grad()
def evaluate(model, batches, autocast) -> dict:
    """Loss, top-1 and top-5 accuracy (fractions) over a whole split, summed over processes."""
    model.eval()
    loss = correct = correct5 = 0.0
    n = 0
    device = None
    for x, y in batches.epoch(0):
        device = x.device
        with torch.autocast(**autocast):
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        correct += hit[:, 0].sum()
        correct5 += hit.any(dim=1).sum()
        n += len(y)
    loss, correct, correct5, n = distributed.all_sum(
        [float(loss), float(correct), float(correct5), n], device or "cpu")
    n = max(n, 1)
    return {"loss": loss / n, "accuracy": correct / n, "top5": correct5 / n, "images": int(n)}


def evaluate_checkpoint(path, *, dataset=None, data_dir=None, batch_size=128, device="cpu",
                        workers=4) -> dict:
    """A checkpoint's module on the test split of its dataset (or `dataset`): the metrics of
    `evaluate`, with what was evaluated."""
    obj = checkpoint.read(path)
    gm, net = checkpoint.rebuild(obj, os.fspath(path))
    dataset = dataset or obj.get("dataset")
    if dataset is None:
        raise TrainError(f"{path} does not say which dataset it was trained on (written by "
                         "`compile --save`?): give --dataset")
    data_dir = data_dir or obj.get("data_dir") or "data"
    test_set = load(dataset, data_dir, input_shape=net.input_shape, train=False)
    check_classes(test_set, net.outputs, net=net)
    device = torch.device(device)
    gm.to(device)
    batches = _Batches(test_set, batch_size, distributed.World(), device, 0, workers,
                       shuffle=False)
    t0 = time.perf_counter()
    result = evaluate(gm, batches, dict(device_type=device.type, enabled=False))
    if net.outputs <= 5:
        del result["top5"]
    return {"checkpoint": os.fspath(path), "network": net.name, "dataset": dataset,
            "epoch": obj.get("epoch"), **result, "seconds": time.perf_counter() - t0}


class _Batches:
    """An epoch's batches for this process. In-memory sets are indexed as whole tensors (on the
    GPU when training there); ImageNet goes through a DataLoader with workers. Either way the
    order is a DistributedSampler's: a permutation seeded by (seed, epoch), shard `rank`."""

    def __init__(self, ds, batch, world, device, seed, workers, shuffle=True):
        from torch.utils.data import DataLoader, DistributedSampler
        self.batch, self.device = batch, device
        self.shuffle = shuffle
        if shuffle:
            self.sampler = DistributedSampler(ds, num_replicas=world.size, rank=world.rank,
                                              shuffle=True, seed=seed)
        else:  # evaluation: each image once, no padding
            self.sampler = range(world.rank, len(ds), world.size)
        n = len(self.sampler)
        # BatchNorm cannot train on a last batch of one image: drop it, as rarely as that is.
        self.drop_last = shuffle and n % batch == 1
        self.tensors = getattr(ds, "tensors", None)
        if self.tensors is not None:
            x, y = self.tensors
            if device.type == "cuda":
                x, y = x.to(device), y.to(device)
            self.tensors = x, y
            scale = 255.0 if x.dtype == torch.uint8 else 1.0
            self.mean = (torch.tensor(ds.mean, device=device) * scale).view(1, -1, 1, 1)
            self.std = (torch.tensor(ds.std, device=device) * scale).view(1, -1, 1, 1)
        else:
            self.generator = torch.Generator()
            self.worker_seed = lambda epoch: _mix(seed, epoch, world.rank)
            self.loader = DataLoader(ds, batch_size=batch, sampler=self.sampler,
                                     num_workers=workers, generator=self.generator,
                                     pin_memory=device.type == "cuda", drop_last=self.drop_last,
                                     persistent_workers=False)

    def count(self, epoch) -> int:
        """Images this process sees in an epoch."""
        n = len(self.sampler)
        return n - 1 if self.drop_last else n

    def epoch(self, epoch):
        if self.shuffle:
            self.sampler.set_epoch(epoch)
        if self.tensors is None:
            self.generator.manual_seed(self.worker_seed(epoch))  # crops and flips in workers
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        x_all, y_all = self.tensors
        order = torch.as_tensor(list(self.sampler), device=x_all.device)
        stop = len(order) - 1 if self.drop_last else len(order)
        for i in range(0, stop, self.batch):
            idx = order[i:min(i + self.batch, stop)]
            x = (x_all[idx].float() - self.mean) / self.std
            yield x.to(self.device, non_blocking=True), y_all[idx].to(self.device,
                                                                       non_blocking=True)


# What a run folder holds, and the fields a runner checkpoint has beside a module's.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "recipe.json", "curves.png", "resumes.jsonl")
_RUN_FIELDS = {"epoch": int, "metrics": list, "optimizer": dict, "scheduler": dict,
               "scaler": dict, "rng": list, "recipe": dict, "dataset": str}


def _remove_stale_temps(out: Path, log) -> None:
    """Temp files of writes that a kill -9 cut short: never read, so they only take space."""
    stale = stale_temps(out, RUN_FILES)
    for path in stale:
        try:
            os.unlink(path)
        except OSError:
            pass
    if stale:
        log.note(f"removed {plural(len(stale), 'unfinished temporary file')} of an "
                 f"interrupted write in {out}")


def _finished_epochs(out: Path) -> int:
    try:
        with open(out / "metrics.jsonl", encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def _open_run(out: Path, resume: bool, log):
    """(checkpoint dict, its path) to resume from, or (None, None) for a new run. Refuses to
    start over a folder that holds a run's results unless told to resume it."""
    last, best = out / "last.pt", out / "best.pt"
    epochs = _finished_epochs(out)
    if not resume:
        held = [p.name for p in (last, best) if p.exists()]
        held += [f"metrics.jsonl of {plural(epochs, 'epoch')}"] if epochs else []
        if held:
            raise TrainError(f"{out} already holds a run ({', '.join(held)}); nothing was "
                             "changed. Add --resume to continue it, or choose another --out.")
        return None, None
    if last.is_file():
        try:
            return _read_run(last), last
        except checkpoint.CheckpointError as err:
            raise TrainError(f"{err}. {_best_advice(best)}") from None
    if best.is_file():  # last.pt deleted, or a kill between writing best.pt and last.pt
        state = _read_run(best)
        log.note(f"{out} has no last.pt: resuming from best.pt (epoch {state['epoch']}), its "
                 "newest complete checkpoint; later epochs are trained again")
        return state, best
    if epochs:
        raise TrainError(f"cannot resume {out}: its metrics.jsonl has "
                         f"{plural(epochs, 'epoch')} but there is no checkpoint (no last.pt "
                         "or best.pt); start a new run with another --out")
    log(f"no checkpoint in {out}: starting from scratch")
    return None, None


def _read_run(path: Path) -> dict:
    state = checkpoint.read(path)
    checkpoint.require(state, path, _RUN_FIELDS)
    if state["epoch"] < 1 or len(state["metrics"]) != state["epoch"]:
        raise checkpoint.CheckpointError(f"{path}: a damaged cliquegraph checkpoint: epoch "
                                         f"{state['epoch']} with {len(state['metrics'])} "
                                         "rows of metrics")
    return state


def _best_advice(best: Path) -> str:
    if not best.is_file():
        return "There is no best.pt to fall back on; start again with another --out."
    try:
        epoch = _read_run(best)["epoch"]
    except checkpoint.CheckpointError:
        return f"{best} is damaged too; start again with another --out."
    return (f"{best} is intact (epoch {epoch}): to continue from it, move it over "
            f"{best.parent / 'last.pt'} (keep a copy) and run the same command with --resume.")


def _resume_changes(state, source, net, seed, amp, settings, log) -> dict:
    """What this resume changes about the run in `state`: refused (TrainError, naming each)
    where a resumed run would no longer compute what the uninterrupted one would; otherwise
    {setting: [before, now]} for the log and resumes.jsonl."""
    refused = _network_changes(checkpoint.network_of(state, source), net)
    if seed != state.get("seed", seed):
        refused.append(f"--seed {seed}, the run's is {state['seed']} (it fixes the data order)")
    if amp != state.get("amp", amp):
        refused.append(f"--amp {amp}, the run trains with {state['amp']}")
    if refused:
        raise TrainError(f"--resume would not continue {source} as it was started: "
                         f"{'; '.join(refused)}. Resume with the spec, --set and options the run "
                         "started with, or start a new run with another --out.")
    before = state.get("settings", {})
    changes = {k: [before[k], v] for k, v in settings.items() if k in before and before[k] != v}
    for key, (old, new) in changes.items():
        log.note(f"resuming with {key} {new} (the run had {old}): the numbers may differ in "
                 "the last digits from an uninterrupted run")
    return changes


def _network_changes(saved, now) -> list:
    """How the network `now` differs from the one a run was built with, in a user's words."""
    from ..values import show
    was, new = dict(saved.params), dict(now.params)
    out = [f"param {name} = {show(new[name]) if name in new else '(none)'}, the run's is "
           f"{show(was[name]) if name in was else '(none)'}"
           for name in list(was) + [n for n in new if n not in was]
           if was.get(name) != new.get(name)]
    if out:
        return out
    if saved.input_shape != now.input_shape:
        return [f"the spec's input is {'x'.join(map(str, now.input_shape))}, the run's is "
                f"{'x'.join(map(str, saved.input_shape))}"]
    for field in ("name", "stem", "blocks", "transitions", "scales", "head_scale", "head"):
        if getattr(saved, field) != getattr(now, field):
            return [f"the spec's {field.replace('_', ' ')} differs from the run's"]
    for a, b in zip(saved.blocks, now.blocks):
        if sorted(a.graph.edges) != sorted(b.graph.edges):
            return [f"block {a.index}'s edges W_ij differ from the run's"]
    return []


def _record_resume(out: Path, start: int, source: Path, changes: dict) -> None:
    """resumes.jsonl: one line per resume, with the settings it changed."""
    path = out / "resumes.jsonl"
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    row = {"after_epoch": start, "from": source.name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "changes": changes}
    write_text_atomic(path, old + json.dumps(row) + "\n")


def _recipe(cfg, dataset, state, source, log) -> Recipe:
    if not state:
        recipe = recipe_for(dataset, **cfg.recipe)
        late = [m for m in recipe.milestones if m >= recipe.epochs]
        if late:
            log.note(f"--milestones {','.join(map(str, late))} at or past the last epoch "
                     f"({recipe.epochs}): the lr never drops there")
        return recipe
    try:
        saved = Recipe.from_json(state["recipe"])
    except (TypeError, ValueError, KeyError):
        raise checkpoint.CheckpointError(f"{source}: a damaged cliquegraph checkpoint: its "
                                         "recipe is not one the runner wrote") from None
    changed = [k for k, v in cfg.recipe.items()
               if v is not None and k != "epochs" and v != getattr(saved, k)]
    if changed:
        raise TrainError(f"{source} continues with its own recipe (see recipe.json); only "
                         f"--epochs can change on --resume, not {', '.join(changed)}")
    epochs = cfg.recipe.get("epochs")
    if not epochs or epochs == saved.epochs:
        return saved
    fresh = recipe_for(dataset, epochs=epochs).milestones
    steps = ", ".join(map(str, saved.milestones)) or "none"
    log.note(f"--epochs {epochs} on --resume (the run had {saved.epochs}): the lr still "
             f"drops after epochs {steps}, as the run's recipe says"
             + (f" (a new {epochs}-epoch run would drop after {', '.join(map(str, fresh))})"
                if fresh != saved.milestones else ""))
    return dataclasses.replace(saved, epochs=epochs)


def _mix(seed: int, epoch: int, rank: int) -> int:
    """A seed for (run seed, epoch, rank): distinct streams, independent of process history."""
    return ((seed * 1_000_003 + epoch) * 1_009 + rank) % (2 ** 63)


def _rng_state(device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _restore_rng(states, world, device, log):
    if len(states) != world.size:
        log.note(f"the checkpoint comes from {plural(len(states), 'process', 'processes')}, this run has "
                 f"{world.size}: dropout draws new random numbers from here on")
        return
    mine = states[world.rank]
    torch.set_rng_state(mine["cpu"])
    if device.type == "cuda" and mine["cuda"] is not None:
        torch.cuda.set_rng_state(mine["cuda"], device)


@contextlib.contextmanager
def _interrupts_wait():
    """Ctrl-C (and SIGTERM) held back until the block is done, then delivered: an epoch's
    files are written whole, and no interrupt lands inside an import (matplotlib's, on the
    first plot), which Python turns into a RuntimeError or, in a C extension, an abort.
    (A handler, not a signal mask: torch's threads would take a masked signal instead.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    held = {sig: signal.signal(sig, lambda s, frame: pending.append(s))
            for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)


def _write_files(out: Path, recipe: Recipe, metrics: list) -> None:
    """recipe.json, metrics.jsonl and curves.png, each replaced whole."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "recipe.json", json.dumps(recipe.to_json(), indent=2) + "\n")
    write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
    if metrics:
        _plot(metrics, out / "curves.png")


def _plot(metrics, path: Path) -> None:
    """Loss and test error per epoch, two panels side by side (the paper's Figure 3)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    epochs = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(10, 4), layout="tight")
    loss, error = fig.subplots(1, 2)
    loss.plot(epochs, [m["train_loss"] for m in metrics], label="train")
    loss.plot(epochs, [m["test_loss"] for m in metrics], label="test")
    loss.set(xlabel="epoch", ylabel="loss", title="loss")
    loss.legend()
    error.plot(epochs, [100 * (1 - m["test_acc"]) for m in metrics], color="C1")
    error.set(xlabel="epoch", ylabel="test error (%)", title="test error")
    for ax in (loss, error):
        ax.grid(alpha=0.3)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _bar(epoch, epochs, images):
    from tqdm import tqdm
    return tqdm(total=images, desc=f"epoch {epoch}/{epochs}", unit="img", unit_scale=True,
                leave=False, dynamic_ncols=True)


class _Log:
    """Lines on stdout, notes on stderr: from rank 0 only."""

    def __init__(self, main: bool):
        self.main = main

    def __call__(self, line: str) -> None:
        if self.main:
            print(line, flush=True)

    def note(self, line: str) -> None:
        if self.main:
            print(f"note: {line}", file=sys.stderr, flush=True)
