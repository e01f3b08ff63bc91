"""The runner: a short run learns, a stopped or killed run resumes to the very same numbers,
torchrun's processes stay in step, and every bad input ends in one message, not a traceback.

Everything trains a tiny clique network on sklearn's digits at their native 8x8, so the whole
file runs in well under a minute on a small CPU.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from cliquegraph import cli
from cliquegraph.train import data, recipes

TINY = """\
network tiny {
  param k = 6
  param classes = 10
  param dropout = 0.1

  input 1x8x8
  stem {
    conv 3x3 8
  }
  blocks 2 {
    layers 2
    width k
    topology clique
    stages 2
    feature x0 + last
    transit last
    dropout dropout
  }
  transition {
    bn
    relu
    conv 1x1 C
    pool avg 2
  }
  head {
    scales all
    bn
    relu
    pool global
    fc classes
  }
}
"""

EPOCHS = ["--epochs", "4"]
TIMING = ("seconds", "images_per_second")  # the only numbers a resumed run may change
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs gain nothing from threads, and on a busy 2-core machine two threads wait on
    each other; subprocesses get OMP_NUM_THREADS=1 too, so their numbers match ours."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.clq"
    path.write_text(TINY)
    return str(path)


def train(capsys, spec, out, *args):
    """`cliquegraph train` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["train", spec, "--train", "digits", "--out", str(out), "--device", "cpu",
                     *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def numbers(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_run(a, b):
    """Two run folders with the same numbers and bit-identical final weights and optimizer."""
    assert numbers(metrics(a)) == numbers(metrics(b))
    ca, cb = load(os.path.join(a, "last.pt")), load(os.path.join(b, "last.pt"))
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][key], cb["state_dict"][key]), key
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert ca["scheduler"] == cb["scheduler"]


def python_env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    return env


@pytest.fixture(scope="module")
def full_run(tiny, tmp_path_factory):
    """Four uninterrupted epochs: the reference the other tests compare against."""
    out = tmp_path_factory.mktemp("full") / "run"
    assert cli.main(["train", tiny, "--train", "digits", "--out", str(out), "--device", "cpu",
                     *EPOCHS]) == 0
    return out


# ---- a run and what it leaves ------------------------------------------------------------------

def test_a_short_digits_run_learns(full_run):
    rows = metrics(full_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert rows[-1]["test_acc"] > 0.5  # ten classes: chance is 0.1
    assert all(r["images_per_second"] > 0 and r["seconds"] > 0 for r in rows)


def test_the_run_folder_holds_recipe_metrics_checkpoints_and_curves(full_run):
    recipe = json.loads((full_run / "recipe.json").read_text())
    assert recipe == {"epochs": 4, "batch_size": 64, "lr": 0.1, "milestones": [2, 3],
                      "gamma": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4,
                      "dropout": 0.0}
    assert set(metrics(full_run)[0]) == {"epoch", "train_loss", "test_loss", "test_acc", "lr",
                                         "seconds", "images_per_second"}
    assert [r["lr"] for r in metrics(full_run)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    ckpt = load(full_run / "last.pt")  # weights_only: plain tensors, dicts, lists, numbers
    assert ckpt["format"] == "cliquegraph/1" and ckpt["network"] == "tiny"
    assert ckpt["epoch"] == 4 and ckpt["dataset"] == "digits" and ckpt["recipe"] == recipe
    assert {"optimizer", "scheduler", "scaler", "rng", "metrics", "spec_text"} <= set(ckpt)
    assert isinstance(ckpt["rng"][0]["cpu"], torch.Tensor)
    best = load(full_run / "best.pt")
    assert best["metrics"][-1]["test_acc"] == max(r["test_acc"] for r in metrics(full_run))
    assert (full_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(full_run) if p.startswith(".tmp")]


def test_recipes_are_the_papers():
    cifar = recipes.recipe_for("cifar10")
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.milestones) == (300, 64, 0.1,
                                                                            (150, 225))
    assert (cifar.momentum, cifar.nesterov, cifar.weight_decay) == (0.9, True, 1e-4)
    assert recipes.recipe_for("svhn").milestones == (20, 30)
    imagenet = recipes.recipe_for("imagenet")
    assert (imagenet.epochs, imagenet.batch_size, imagenet.milestones) == (100, 160,
                                                                           (30, 60, 90))
    # A shortened run keeps the schedule's shape; an explicit value wins.
    assert recipes.recipe_for("imagenet", epochs=10).milestones == (3, 6, 9)
    assert recipes.recipe_for("cifar10", lr=0.05, milestones=(5,)).milestones == (5,)
    assert set(data.DATASETS) == set(recipes._PRESETS)


def test_the_cli_knows_the_datasets_without_importing_them():
    from cliquegraph.cli import train as cli_train
    assert cli_train.DATASETS == data.DATASETS


# ---- resuming ----------------------------------------------------------------------------------

def test_a_stopped_run_resumed_equals_an_uninterrupted_one(capsys, tiny, full_run, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = train(capsys, tiny, out, *EPOCHS, "--stop-after", "2")
    assert code == 0 and "stopping after epoch 2" in stdout
    assert len(metrics(out)) == 2
    code, stdout, _ = train(capsys, tiny, out, *EPOCHS, "--resume")
    assert code == 0 and "resuming after epoch 2" in stdout
    assert_same_run(full_run, out)


def test_a_killed_run_resumed_equals_an_uninterrupted_one(capsys, tiny, full_run, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cliquegraph", "train", tiny, "--train",
                             "digits", "--out", str(out), "--device", "cpu", *EPOCHS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env=python_env())
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() or not metrics(out):  # epoch 1 is saved
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait()
    assert load(out / "last.pt")["epoch"] >= 1
    code, _, _ = train(capsys, tiny, out, *EPOCHS, "--resume")
    assert code == 0
    assert_same_run(full_run, out)


def test_an_imagenet_folder_resumes_exactly_with_random_crops_in_workers(capsys, tiny,
                                                                         tmp_path):
    """The DataLoader path: JPEGs decoded, cropped and flipped at random in a worker process,
    whose seed comes from (seed, epoch, rank), so a resumed epoch draws the same crops."""
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in range(3):
            folder = tmp_path / "inet" / split / f"n0{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (rng.rand(12, 14, 3) * 80 + 80 * c).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.JPEG")
    spec = tmp_path / "tiny3.clq"
    spec.write_text(TINY.replace("input 1x8x8", "input 3x8x8"))
    args = ("--train", "imagenet", "--data", str(tmp_path / "inet"), "--set", "classes=3",
            "--epochs", "3", "--batch-size", "8", "--workers", "1")

    def run(out, *more):
        code = cli.main(["train", str(spec), "--out", str(tmp_path / out), "--device", "cpu",
                         *args, *more])
        assert code == 0, capsys.readouterr().err

    run("full")
    run("split", "--stop-after", "1")
    run("split", "--resume")
    assert_same_run(tmp_path / "full", tmp_path / "split")
    assert len(metrics(tmp_path / "full")) == 3


# ---- torchrun ----------------------------------------------------------------------------------

SPY = """\
import os, sys
import torch
from cliquegraph import cli
from cliquegraph.train import loop

train = loop.train

def spy(cfg):  # each process dumps its parameters after training
    run = train(cfg)
    params = {k: v.detach().clone() for k, v in run.model.named_parameters()}
    torch.save(params, os.path.join(sys.argv[1], "rank%s.pt" % os.environ["RANK"]))
    return run

loop.train = spy
sys.exit(cli.main(sys.argv[2:]))
"""


def test_two_gloo_processes_under_torchrun_keep_identical_parameters(tiny, tmp_path):
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(spy), str(tmp_path), "train", tiny, "--train", "digits", "--out", str(out),
         "--device", "cpu", "--epochs", "2"],
        capture_output=True, text=True, cwd=ROOT, env=python_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x 2 processes" in proc.stdout
    assert proc.stdout.count("epoch 2/2") == 1  # rank 0 alone logs
    rank0, rank1 = load(tmp_path / "rank0.pt"), load(tmp_path / "rank1.pt")
    saved = load(out / "last.pt")["state_dict"]
    torch.manual_seed(0)
    initial = dict(cli_build(tiny).named_parameters())
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], saved[key]), key
    assert not all(torch.equal(rank0[k], initial[k]) for k in rank0)  # it did take steps
    assert len(metrics(out)) == 2


def cli_build(spec):
    import cliquegraph
    return cliquegraph.build(spec)


# ---- eval --------------------------------------------------------------------------------------

def test_eval_prints_one_json_object(capsys, full_run):
    assert cli.main(["eval", str(full_run / "last.pt"), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    last = metrics(full_run)[-1]
    assert result["images"] == 360 and result["dataset"] == "digits"
    assert result["accuracy"] == pytest.approx(last["test_acc"])
    assert result["loss"] == pytest.approx(last["test_loss"], rel=1e-4)
    assert result["accuracy"] <= result["top5"] <= 1


# ---- bad input: one message, exit 1, no traceback ----------------------------------------------

def test_a_missing_data_folder_is_named(capsys, specs_dir, tmp_path):
    code = cli.main(["train", str(specs_dir / "cliquenet-cifar.clq"), "--train", "cifar10",
                     "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "no CIFAR-10 data" in err and "nowhere" in err


def test_a_wrong_format_data_folder_is_named(capsys, specs_dir, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    code = cli.main(["train", str(specs_dir / "cliquenet-cifar.clq"), "--train", "cifar10",
                     "--data", str(tmp_path),
                     "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "data_batch_1" in err and "not a CIFAR-10 batch" in err


def test_classes_that_do_not_fit_the_dataset_are_refused(capsys, tiny, tmp_path):
    code, _, err = train(capsys, tiny, tmp_path / "run", "--set", "classes=7")
    assert code == 1 and "7 outputs" in err and "--set classes=10" in err


def test_resuming_with_another_spec_is_refused(capsys, tiny, full_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(full_run / "last.pt", out / "last.pt")
    code, _, err = train(capsys, tiny, out, *EPOCHS, "--resume", "--set", "k=4")
    assert code == 1 and "param k = 4, the run's is 6" in err


def test_an_existing_run_is_not_overwritten(capsys, tiny, full_run):
    before = (full_run / "last.pt").read_bytes()
    code, _, err = train(capsys, tiny, full_run, *EPOCHS)
    assert code == 1 and "--resume" in err
    assert (full_run / "last.pt").read_bytes() == before


def test_resume_keeps_the_saved_recipe(capsys, tiny, full_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(full_run / "last.pt", out / "last.pt")
    code, _, err = train(capsys, tiny, out, "--resume", "--lr", "0.5")
    assert code == 1 and "only --epochs can change" in err


def test_eval_refuses_weights_of_another_spec(capsys, full_run, tmp_path):
    ckpt = load(full_run / "last.pt")
    ckpt.pop("digest")  # edited by hand: no longer the content it was written with
    ckpt["params"] = {"k": "4"}  # the weights are k=6's
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    assert cli.main(["eval", str(bad), "--device", "cpu"]) == 1
    assert "do not fit this spec" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert cli.main(["eval", str(tmp_path / "junk.pt"), "--device", "cpu"]) == 1
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_last_one(capsys, tiny, tmp_path,
                                                                        monkeypatch):
    real_save, calls = torch.save, []

    def full_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 writes best.pt and last.pt; then the disk is full
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    code, _, err = train(capsys, tiny, out, *EPOCHS)
    assert code == 1 and "No space left on device" in err
    assert "epoch 1" in err and "--resume" in err
    monkeypatch.undo()
    assert load(out / "last.pt")["epoch"] == 1
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]


def test_an_unwritable_out_folder_is_named(capsys, tiny, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = train(capsys, tiny, blocker / "run", "--epochs", "1")
    assert code == 1 and "cannot write to" in err


def test_amp_on_cpu_falls_back_to_fp32_and_says_so(capsys, tiny, tmp_path):
    code, out, err = train(capsys, tiny, tmp_path / "run", "--epochs", "1", "--amp", "bf16",
                           "--no-channels-last")
    assert code == 0 and "needs CUDA" in err and "NCHW" in out


def test_ctrl_c_leaves_a_message_not_a_traceback(tiny, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cliquegraph", "train", tiny, "--train",
                             "digits", "--out", str(out), "--device", "cpu", "--epochs", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=python_env())
    for line in proc.stdout:  # training has begun
        if line.startswith("recipe:"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:  # generous: CI's 2 cores may be loaded; a real hang still fails
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no exit 180 s after SIGINT; stderr:\n{err[-2000:]}")
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err


# ---- issue 10: nothing lost, nothing silently changed, one paragraph for every bad input ------

def run_copy(full_run, tmp_path, *names):
    """A copy of the full run's folder with only `names` in it."""
    out = tmp_path / "run"
    out.mkdir()
    for name in names:
        shutil.copy(full_run / name, out / name)
    return out


@pytest.mark.parametrize("kept", [("best.pt",), ("metrics.jsonl",), ("best.pt", "metrics.jsonl")])
def test_a_run_without_last_pt_is_not_overwritten(capsys, tiny, full_run, tmp_path, kept):
    out = run_copy(full_run, tmp_path, *kept)
    before = {name: (out / name).read_bytes() for name in kept}
    code, _, err = train(capsys, tiny, out, *EPOCHS)
    assert code == 1 and "already holds a run" in err and "--resume" in err
    assert {name: (out / name).read_bytes() for name in kept} == before


def test_resume_without_last_pt_continues_from_best_pt(capsys, tiny, full_run, tmp_path):
    out = run_copy(full_run, tmp_path, "best.pt", "metrics.jsonl")
    best_epoch = load(out / "best.pt")["epoch"]
    code, stdout, err = train(capsys, tiny, out, *EPOCHS, "--resume")
    assert code == 0 and "no last.pt" in err and f"epoch {best_epoch}" in err
    assert numbers(metrics(out)) == numbers(metrics(full_run))


def test_resume_with_metrics_but_no_checkpoint_says_why_not(capsys, tiny, full_run, tmp_path):
    out = run_copy(full_run, tmp_path, "metrics.jsonl")
    code, _, err = train(capsys, tiny, out, *EPOCHS, "--resume")
    assert code == 1 and "no checkpoint" in err
    assert len(metrics(out)) == 4


def flip(path, at, count=64):
    data = bytearray(path.read_bytes())
    data[at:at + count] = bytes(b ^ 0xFF for b in data[at:at + count])
    path.write_bytes(bytes(data))


def tensor_record_offset(path):
    """Where the bytes of the largest tensor record of a torch zip begin."""
    import zipfile
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    # local header: 30 bytes + name + extra field, then the stored bytes
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(fh.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_len + extra_len + 8


def test_flipped_bytes_in_last_pt_are_refused_and_best_pt_named(capsys, tiny, full_run,
                                                               tmp_path):
    out = run_copy(full_run, tmp_path, "last.pt", "best.pt", "metrics.jsonl")
    flip(out / "last.pt", tensor_record_offset(out / "last.pt"))
    before = (out / "metrics.jsonl").read_bytes()
    code, _, err = train(capsys, tiny, out, *EPOCHS, "--epochs", "5", "--resume")
    assert code == 1 and "last.pt" in err and "digest" in err
    assert "best.pt is intact" in err and "Traceback" not in err
    assert (out / "metrics.jsonl").read_bytes() == before
    assert cli.main(["eval", str(out / "last.pt"), "--device", "cpu"]) == 1
    assert "digest" in capsys.readouterr().err
    flip(out / "best.pt", tensor_record_offset(out / "best.pt"))
    code, _, err = train(capsys, tiny, out, *EPOCHS, "--resume")
    assert code == 1 and "best.pt is damaged too" in err


@pytest.mark.parametrize("change, named", [
    (["--set", "dropout=0.5"], "param dropout = 0.5"),
    (["--seed", "3"], "--seed 3"),
])
def test_resume_refuses_changes_that_break_exactness(capsys, tiny, full_run, tmp_path, change,
                                                     named):
    out = run_copy(full_run, tmp_path, "last.pt", "metrics.jsonl")
    code, _, err = train(capsys, tiny, out, "--epochs", "5", "--resume", *change)
    assert code == 1 and named in err and "would not continue" in err
    assert len(metrics(out)) == 4


def test_resume_refuses_a_spec_that_differs_only_in_input_size(capsys, tiny, full_run,
                                                               tmp_path):
    out = run_copy(full_run, tmp_path, "last.pt", "metrics.jsonl")
    other = tmp_path / "tiny16.clq"
    other.write_text(TINY.replace("input 1x8x8", "input 1x16x16"))
    code, _, err = train(capsys, str(other), out, "--epochs", "5", "--resume")
    assert code == 1 and "input is 1x16x16" in err and "1x8x8" in err


def test_resume_with_more_epochs_says_the_milestones_stay_and_records_it(capsys, tiny, full_run,
                                                                        tmp_path):
    out = run_copy(full_run, tmp_path, "last.pt", "metrics.jsonl")
    code, _, err = train(capsys, tiny, out, "--epochs", "6", "--resume")
    assert code == 0 and "still drops after epochs 2, 3" in err
    rows = [json.loads(line) for line in (out / "resumes.jsonl").read_text().splitlines()]
    assert rows == [dict(rows[0], after_epoch=4, changes={"epochs": [4, 6]})]
    assert [m["lr"] for m in metrics(out)][4:] == pytest.approx([0.001, 0.001])


def test_stale_temp_files_of_a_killed_write_are_removed(capsys, tiny, full_run, tmp_path):
    out = run_copy(full_run, tmp_path, "last.pt", "metrics.jsonl")
    stale = [out / ".tmp-abc123-last.pt", out / ".tmp-x9-metrics.jsonl"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    mine = out / ".tmp-notes.txt"  # not one of the runner's
    mine.write_text("keep")
    code, _, err = train(capsys, tiny, out, *EPOCHS, "--resume")
    assert code == 0 and "removed 2 unfinished temporary files" in err
    assert not any(p.exists() for p in stale) and mine.exists()


def test_a_truncated_last_pt_says_so_and_points_at_best_pt(capsys, tiny, full_run, tmp_path):
    out = run_copy(full_run, tmp_path, "last.pt", "best.pt", "metrics.jsonl")
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[:len(data) // 2])
    code, _, err = train(capsys, tiny, out, *EPOCHS, "--resume")
    assert code == 1 and "truncated" in err and "best.pt is intact" in err


def test_a_full_disk_is_named_in_words(capsys, tiny, tmp_path, monkeypatch):
    """torch reports ENOSPC from its zip writer as '[enforce fail ...] unexpected pos'."""
    import collections
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        if "epoch" in obj and obj["epoch"] >= 2:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos "
                               "4480 vs 4374")
        return real_save(obj, path, *args, **kwargs)

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 4096))
    code, _, err = train(capsys, tiny, tmp_path / "run", *EPOCHS)
    monkeypatch.undo()
    assert code == 1 and "No space left on device (the file system at" in err
    assert "is full) writing" in err and "last.pt" in err
    assert "epoch 1" in err and "is intact" in err and "enforce" not in err
    assert load(tmp_path / "run" / "last.pt")["epoch"] == 1


@pytest.mark.parametrize("args, says", [
    (["--momentum", "0"], "Nesterov needs a momentum above 0"),
    (["--momentum", "-1"], "--momentum: must be in [0, 1)"),
    (["--weight-decay", "-1"], "--weight-decay: must be 0 or more"),
    (["--seed", "1e23"], "--seed: not a whole number"),
    (["--seed", "100000000000000000000000"], "--seed: must be in 0..9223372036854775807"),
    (["--gamma", "1e308", "--milestones", "1"], "--gamma: must be in (0, 1]"),
    (["--lr", "inf"], "--lr: must be a finite number"),
])
def test_bad_recipe_options_are_usage_errors(capsys, tiny, tmp_path, args, says):
    try:  # argparse's own errors leave through SystemExit, ours through main's return
        code, _, err = train(capsys, tiny, tmp_path / "run", *args)
    except SystemExit as exc:
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err
    assert err.startswith("usage: cliquegraph train SPEC") and err.count("\n") == 2
    assert not (tmp_path / "run").exists()


def test_the_end_of_training_names_the_best_epoch_and_the_run_folder(full_run, capsys, tiny,
                                                                     tmp_path):
    code, stdout, _ = train(capsys, tiny, tmp_path / "run", "--epochs", "1")
    assert code == 0
    assert "best test accuracy" in stdout and "after epoch 1" in stdout
    assert str(tmp_path / "run") in stdout.splitlines()[-1]
    assert "1 epoch," in stdout and "1 epochs" not in stdout


def test_milestones_past_the_last_epoch_are_warned_about(capsys, tiny, tmp_path):
    code, _, err = train(capsys, tiny, tmp_path / "run", "--milestones", "5", "--epochs", "1")
    assert code == 0 and "--milestones 5 at or past the last epoch (1)" in err


def test_threads_default_to_the_usable_cores_shared_between_processes(monkeypatch):
    from cliquegraph.cli import train as cli_train
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cli_train._default_threads() == 3
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert cli_train._default_threads() == 16


def test_train_sets_the_thread_count(capsys, tiny, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    code, _, _ = train(capsys, tiny, tmp_path / "run", "--epochs", "1", "--threads", "1")
    assert code == 0 and seen == [1]


@pytest.mark.parametrize("drop, retype, says", [
    ("spec_text", None, "no 'spec_text'"),
    ("state_dict", None, "no 'state_dict'"),
    (None, ("spec_text", 5), "'spec_text' is a int, not a str"),
    (None, ("state_dict", [1, 2]), "'state_dict' is a list, not a dict"),
    (None, ("state_dict", {"w": "not a tensor"}), "not a mapping of names to tensors"),
])
def test_eval_of_a_checkpoint_with_missing_or_mistyped_fields(capsys, full_run, tmp_path, drop,
                                                              retype, says):
    ckpt = load(full_run / "last.pt")
    ckpt.pop("digest")
    if drop:
        del ckpt[drop]
    else:
        ckpt[retype[0]] = retype[1]
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    assert cli.main(["eval", str(bad), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.count("\n") == 1


def test_eval_of_a_text_file_or_a_spec_says_what_it_is(capsys, tiny, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("epoch 3 looked good\n")
    assert cli.main(["eval", str(text)]) == 1
    err = capsys.readouterr().err
    assert "a text file" in err and "KeyError" not in err
    assert cli.main(["eval", tiny]) == 1
    err = capsys.readouterr().err
    assert "is a .clq spec, not a checkpoint" in err and "weights_only" not in err


def test_a_checkpoint_holding_python_objects_is_refused_without_torchs_advice(capsys,
                                                                              tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "cliquegraph/1", "hook": os.getcwd}, evil)
    assert cli.main(["eval", str(evil)]) == 1
    err = capsys.readouterr().err
    assert "never unpickles" in err and "posix.getcwd" in err
    assert "weights_only" not in err and "will likely succeed" not in err


def test_an_unexpected_error_is_one_paragraph(capsys, monkeypatch):
    monkeypatch.setattr(cli.check, "cmd_check", lambda args: 1 / 0)
    monkeypatch.delenv("CLIQUEGRAPH_TRACEBACK", raising=False)
    parser_code = cli.main(["check", "x.clq"])
    err = capsys.readouterr().err
    assert parser_code == 1 and "internal error (ZeroDivisionError" in err
    assert "Traceback" not in err


def test_version():
    proc = subprocess.run([sys.executable, "-m", "cliquegraph", "--version"], capture_output=True,
                          text=True, env=python_env(), cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("cliquegraph ")


def test_a_checkpoints_spec_text_never_reads_local_files(capsys, full_run, tmp_path):
    secret = tmp_path / "secret.clq"
    secret.write_text("SECRET-LINE\n")
    ckpt = load(full_run / "last.pt")
    ckpt.pop("digest")
    ckpt["spec_text"] = f'include "{secret}"\n' + ckpt["spec_text"]
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    assert cli.main(["eval", str(bad), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "cannot include files" in err and "SECRET" not in err


def test_a_run_that_cannot_fit_is_refused_before_training(capsys, tiny, tmp_path, monkeypatch):
    from cliquegraph import estimate
    monkeypatch.setattr(estimate, "available_memory", lambda device="cpu": 64 << 20)
    monkeypatch.setattr(estimate, "_resident", lambda: 0)
    code, stdout, err = train(capsys, tiny, tmp_path / "run", "--epochs", "1")
    assert code == 1 and "training tiny needs about" in err and "has 64 MiB available" in err
    assert "--ignore-memory-estimate" in err and "epoch 1/1" not in stdout
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    code, stdout, err = train(capsys, tiny, tmp_path / "run", "--epochs", "1",
                              "--ignore-memory-estimate")
    assert code == 0 and "not checked" in err and "epoch 1/1" in stdout


def test_a_compressed_checkpoint_is_refused_before_it_is_inflated(capsys, full_run, tmp_path):
    import zipfile
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(full_run / "last.pt") as src, zipfile.ZipFile(bomb, "w") as dst:
        bombed = False
        for info in src.infolist():
            data = src.read(info.filename)
            if "/data/" in info.filename and not bombed:  # a record that inflates to 64 MiB
                dst.writestr(info.filename, bytes(64 << 20), compress_type=zipfile.ZIP_DEFLATED)
                bombed = True
            else:
                dst.writestr(info, data)
    assert bomb.stat().st_size < 1 << 20
    assert cli.main(["eval", str(bomb), "--device", "cpu"]) == 1
    assert "refusing to unpack it" in capsys.readouterr().err


def test_an_interrupt_while_an_epoch_is_written_waits_for_the_files(tiny, tmp_path, monkeypatch):
    """Ctrl-C during the checkpoint writes (here: sent from inside the first one) is held
    until last.pt, best.pt and the metrics are whole, then stops the run; --resume goes on."""
    from cliquegraph import checkpoint as ckpt_module
    from cliquegraph.train import loop
    real, sent = ckpt_module.save_atomic, []

    def save_and_interrupt(obj, path):
        if not sent:
            sent.append(path)
            os.kill(os.getpid(), signal.SIGINT)
        real(obj, path)

    monkeypatch.setattr(ckpt_module, "save_atomic", save_and_interrupt)
    out = tmp_path / "run"
    cfg = loop.TrainConfig(spec=tiny, dataset="digits", out=str(out), recipe={"epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg)
    assert sent and (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert ckpt_module.read(out / "last.pt")["epoch"] == 1
