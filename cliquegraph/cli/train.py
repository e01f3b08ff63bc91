"""`cliquegraph train SPEC --train DATASET` and `cliquegraph eval CHECKPOINT` (registered by
cli/__init__.py; torch is imported only when they run). `compile SPEC --train DATASET` reuses
add_train_arguments and run_training.

    cliquegraph train specs/cliquenet-cifar.clq --set k=12 --set T=6 --train digits
    cliquegraph train specs/cliquenet-cifar.clq --train cifar10 --data ~/data --amp bf16
    cliquegraph train specs/cliquenet-cifar.clq --train cifar10 --data ~/data --resume
    cliquegraph eval runs/cliquenet_cifar-cifar10/best.pt
    torchrun --nproc_per_node 8 -m cliquegraph train specs/s3.clq --train imagenet --data /data/in

Exit codes as everywhere: 0 done, 1 the run cannot start or go on (spec, data, checkpoint, a
failed write), 2 usage; 130 interrupted (the last finished epoch is on disk).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .args import (UsageError, add_set, count, finite_float, parse_sets, positive_float,
                   positive_int, seed)

# train.data.DATASETS, spelled out so that building the parser does not import torch
DATASETS = ("cifar10", "cifar100", "svhn", "imagenet", "digits")


def register(sub) -> None:
    t = sub.add_parser("train", help="train a spec on a dataset with the paper's recipe",
                       usage="cliquegraph train SPEC --train DATASET [--data DIR] [--out DIR] "
                             "[--resume] [options]",
                       description="Train SPEC on DATASET with the paper's recipe for it "
                                   "(every value overridable); resumable, torchrun-aware.")
    t.add_argument("spec", metavar="SPEC", help="the .clq file")
    add_set(t)
    add_train_arguments(t)
    t.set_defaults(func=run_training)

    e = sub.add_parser("eval", help="test accuracy of a checkpoint, as one JSON object",
                       usage="cliquegraph eval CHECKPOINT [--dataset DATASET] [--data DIR] "
                             "[options]")
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="last.pt / best.pt of a run")
    e.add_argument("--dataset", choices=DATASETS, metavar="DATASET",
                   help="default: the one the checkpoint was trained on")
    e.add_argument("--data", metavar="DIR", help="default: the checkpoint's data folder")
    e.add_argument("--batch-size", type=positive_int, default=128, metavar="B")
    e.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda when available, else cpu")
    e.add_argument("--workers", type=count, default=_default_workers(), metavar="N")
    e.set_defaults(func=run_eval)


def add_train_arguments(parser) -> None:
    """The runner's options, for `train` and for `compile --train` (SPEC and --set are the
    command's own)."""
    g = parser.add_argument_group("training")
    g.add_argument("--train", metavar="DATASET", choices=DATASETS, dest="train",
                   help=f"train on one of: {', '.join(DATASETS)} (digits needs no files)")
    g.add_argument("--data", metavar="DIR",
                   help="folder holding the dataset (or its unpacked folder); default ./data")
    g.add_argument("--out", metavar="DIR",
                   help="where metrics.jsonl, checkpoints and curves go; "
                        "default runs/NETWORK-DATASET")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    g.add_argument("--stop-after", type=positive_int, metavar="EPOCH",
                   help="stop after this epoch; --resume goes on (for time-limited jobs)")
    r = parser.add_argument_group("recipe (default: the paper's for the dataset)")
    r.add_argument("--epochs", type=positive_int, metavar="N")
    r.add_argument("--batch-size", type=positive_int, metavar="B",
                   help="over all processes (torchrun splits it)")
    r.add_argument("--lr", type=positive_float, metavar="X")
    r.add_argument("--milestones", type=_milestones, metavar="E1,E2,...",
                   help="epochs after which lr *= gamma (default: at the preset's fractions)")
    r.add_argument("--gamma", type=_fraction, metavar="X",
                   help="lr factor at each milestone, in (0, 1] (default 0.1)")
    r.add_argument("--momentum", type=_momentum, metavar="X", help="in [0, 1) (default 0.9)")
    r.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    r.add_argument("--weight-decay", type=_non_negative, metavar="X")
    d = parser.add_argument_group("speed")
    d.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda when available, else cpu")
    d.add_argument("--amp", choices=("bf16", "fp16", "off"), default="off",
                   help="mixed precision on CUDA (fp16 with a grad scaler)")
    d.add_argument("--compile", action="store_true",
                   help="torch.compile the module (inductor, lower.Compiled; it compiles at "
                        "the first step, and again for evaluation)")
    d.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC activations, the compiler's default (--no-channels-last: NCHW)")
    d.add_argument("--memory-efficient", action=argparse.BooleanOptionalAction, default=True,
                   help="recompute each update's concatenation and BN-ReLU in backward instead "
                        "of keeping them (the compiler's default; --no-memory-efficient keeps "
                        "the concatenations)")
    d.add_argument("--workers", type=count, default=_default_workers(), metavar="N",
                   help="DataLoader workers per process (ImageNet)")
    d.add_argument("--ignore-memory-estimate", action="store_true",
                   help="train even when the estimated memory of a training step is more than "
                        "the machine (or GPU) has available")
    d.add_argument("--threads", type=positive_int, default=_default_threads(), metavar="N",
                   help="CPU threads per process (default: the cores this process may use, "
                        "shared between torchrun's processes, at most 16; 1 is often fastest "
                        "on a busy or small machine)")
    d.add_argument("--seed", type=seed, default=None, metavar="S",
                   help="fixes the initial weights, the data order and dropout (default 0; "
                        "a resumed run keeps its own)")


def run_training(args, spec=None) -> int:
    """Train as `args` (from add_train_arguments) say; `spec` defaults to args.spec. Errors
    reach cli.main, which prints them."""
    spec = spec or args.spec
    if args.train is None and not args.resume:
        raise UsageError("which dataset? --train DATASET (one of "
                         f"{', '.join(DATASETS)})")
    if args.momentum == 0 and args.nesterov is not False:
        raise UsageError("--momentum 0 with Nesterov SGD (the default): Nesterov needs a "
                         "momentum above 0; add --no-nesterov for plain SGD")
    params = parse_sets(getattr(args, "set", None))
    from ..train import loop
    cfg = loop.TrainConfig(
        spec=spec, dataset=args.train, params=params, data_dir=args.data, out=args.out,
        recipe=dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    milestones=args.milestones, gamma=args.gamma, momentum=args.momentum,
                    nesterov=args.nesterov, weight_decay=args.weight_decay),
        resume=args.resume, amp=args.amp, compile=args.compile,
        channels_last=args.channels_last, memory_efficient=args.memory_efficient,
        workers=args.workers, seed=args.seed, threads=args.threads,
        ignore_memory_estimate=args.ignore_memory_estimate,
        device=_device(args.device), stop_after=args.stop_after)
    try:
        loop.train(cfg)
    except KeyboardInterrupt:
        _interrupted(cfg, loop)
        return 130
    return 0


def run_eval(args) -> int:
    from ..train import loop
    device = _device(args.device)
    result = loop.evaluate_checkpoint(args.checkpoint, dataset=args.dataset,
                                      data_dir=args.data, batch_size=args.batch_size,
                                      device=device, workers=args.workers)
    print(json.dumps(result))
    return 0


def _interrupted(cfg, loop) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    out = cfg.out
    if out is None and cfg.dataset is not None:
        from ..elaborate import elaborate
        out = loop.default_out(elaborate(cfg.spec, cfg.params).name, cfg.dataset)
    last = os.path.join(out, "last.pt") if out else None
    saved = (f"The last finished epoch is saved in {last}; run the same command with --resume "
             "to continue from it (the interrupted epoch starts over)."
             if last and os.path.isfile(last) else
             "No epoch had finished, so there is nothing to resume: run the command again.")
    newline = "\n" if sys.stderr.isatty() else ""  # past a progress bar
    print(f"{newline}cliquegraph: training interrupted (Ctrl-C). {saved}", file=sys.stderr)


def _device(name):
    import torch
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but CUDA is not available here (use --device cpu)")
    return name


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _default_threads() -> int:
    """The cores this process may use, split between the processes torchrun starts on this
    machine: each process taking all of them makes every one wait on the others."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(16, cores // max(per_node, 1)))


def _fraction(text) -> float:
    value = finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (the lr is multiplied by it), "
                                         f"got {text}")
    return value


def _momentum(text) -> float:
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _non_negative(text) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _milestones(text) -> tuple:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 150,225, got {text}") from None
    if any(v < 1 for v in values) or list(values) != sorted(values):
        raise argparse.ArgumentTypeError(f"expected increasing epochs like 150,225, got {text}")
    return values
