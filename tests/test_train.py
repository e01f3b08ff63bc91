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
    from cliquegraph import cli_train
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
    assert code == 1 and "do not fit this spec" in err and "block1" in err


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
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
