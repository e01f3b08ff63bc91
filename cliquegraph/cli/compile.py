"""`cliquegraph compile SPEC [--set ...] [--summary table|json] [--batch B] [--code]
[--from-torchvision FILE.pth] [--save FILE]`, and `compile SPEC --train DATASET ...`, which runs the bundled trainer
(cli/train.py). The summary ends with the training memory estimate (estimate.py) at batch B.
Registered by cli/__init__.py; torch is imported only when the command runs."""

from __future__ import annotations

import json
import sys

from .args import add_set, parse_sets, positive_int


def register(sub):
    p = sub.add_parser("compile", usage="cliquegraph compile SPEC [--set NAME=VALUE] "
                       "[--summary table|json] [--code] [--from-torchvision FILE.pth] "
                       "[--save FILE] [--train DATASET ...]",
                       help="compile a spec to a torch.fx GraphModule: summary, "
                       "code, saved weights (and --train DATASET to train it)")
    p.add_argument("spec", metavar="SPEC")
    add_set(p)
    p.add_argument("--summary", choices=("table", "json"), default=None,
                   help="per-block layers, k, stages, shapes, params and FLOPs, and the "
                        "training memory estimate (default: table, unless --code or --save is "
                        "given)")
    # the same value as --batch-size: the estimate is for the batch training would use
    p.add_argument("--batch", dest="batch_size", type=positive_int, metavar="B",
                   help="the batch the memory estimate is for (default: the dataset recipes' "
                        "64 for inputs up to 64x64, ImageNet's 160 above)")
    p.add_argument("--code", action="store_true", help="print the generated forward (gm.code)")
    p.add_argument("--save", metavar="FILE", help="save state_dict + spec text + params "
                   "(torch.load(FILE, weights_only=True) reads it)")
    p.add_argument("--from-torchvision", metavar="FILE.pth",
                   help="load a torchvision model's state_dict (as torch.save wrote it) into "
                        "the compiled spec; with --save, a checkpoint of it")
    from .train import add_train_arguments
    add_train_arguments(p)  # --train DATASET: the bundled runner (cliquegraph train SPEC ...)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if args.train or args.resume:
        from .train import run_training
        return run_training(args)
    overrides = parse_sets(args.set)

    from .. import checkpoint
    from ..lower import build
    from ..summary import as_json, summarize, table

    if args.from_torchvision:
        import torch
        from ..torchvision_weights import from_torchvision
        state_dict = checkpoint.read_torch_file(args.from_torchvision, "torchvision state_dict")
        if not isinstance(state_dict, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
            raise checkpoint.CheckpointError(
                f"{args.from_torchvision}: not a state_dict (a mapping of names to tensors, as "
                "torchvision's model.state_dict() is)")
        gm = from_torchvision(state_dict, args.spec, overrides)
    else:
        gm = build(args.spec, overrides)
    net = gm.meta["cliquegraph"]["network"]
    summary = args.summary or (None if (args.code or args.save) else "table")
    if summary:
        parts = summarize(gm, net)
        memory = _memory(net, args)
        if summary == "json":
            print(json.dumps({**as_json(parts, net), "memory": memory["json"]}))
        else:
            print(table(parts, net))
            print(memory["text"])
    if args.code:
        print(gm.code.strip("\n"))
    if args.save:
        try:
            checkpoint.save(gm, args.save)
        except OSError as exc:
            print(f"cannot write {args.save}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"saved {args.save}", file=sys.stderr)
    return 0


def _memory(net, args) -> dict:
    """The training memory estimate for `args`' batch and settings, as lines for the table
    and a dict for --summary json."""
    import torch
    from ..estimate import available_memory, estimate_memory, gib

    imagenet = min(net.input_shape[1:]) > 64
    batch = args.batch_size or (160 if imagenet else 64)
    why = "" if args.batch_size else (
        " (the ImageNet recipe's batch; --batch B for another)" if imagenet else
        " (the CIFAR/SVHN/digits recipes' batch; --batch B for another)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    est = estimate_memory(net, batch, device=device, amp=args.amp,
                          memory_efficient=args.memory_efficient,
                          channels_last=args.channels_last, compiled=args.compile,
                          momentum=0.9 if args.momentum is None else args.momentum)
    terms = ", ".join(f"{name} {gib(v)}" for name, v in est.terms().items()
                      if v >= est.total / 100)
    text = f"training memory at batch {batch} on {device}{why}:\n  about {gib(est.total)}: {terms}"
    record = {**est.to_json(), "available": None, "fits": None, "largest_batch": None}
    if device == "cpu" or torch.cuda.is_available():
        available = available_memory(device)
        largest = est.largest_batch(available)
        record.update(available=available, fits=est.total <= available, largest_batch=largest)
        text += (f"; {'this machine' if device == 'cpu' else 'the GPU'} has {gib(available)} "
                 "available")
        if est.total > available:
            text += ("\n  too much: training would be refused; " +
                     (f"batch {largest} is the largest that fits" if largest else
                      "not even batch 1 fits"))
    return {"text": text, "json": record}
