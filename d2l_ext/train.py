"""Train one of the book's image classifiers on d2l_ext layers.

    d2l-ext train lenet_relu                      # offline default: 5,000 real MNIST digits
    python -m d2l_ext.train lenet --epochs 5 --backend torch
    torchrun --nproc_per_node 2 -m d2l_ext.train lenet_relu   # data parallel, gloo on CPU

The book's recipe is the default for each model (SGD, Xavier init, its learning
rate, batch size and epochs; see ``d2l_ext.models.VISION_MODELS``). Each epoch
prints a progress bar (loss, accuracy, examples/s), appends to
``OUT/metrics.json``, redraws ``OUT/curves.png`` (loss, train and test accuracy)
and writes ``OUT/checkpoint.pt`` atomically; ``--resume`` continues from that
checkpoint to the same numbers an uninterrupted run gives (same seed, same
machine).

``--backend native`` runs the compiled kernels, ``python`` the pure-Python
fallback, ``torch`` the same network (same initial weights) on torch.nn's layers,
so speed and accuracy compare side by side.

Under ``torchrun`` each of the W processes takes ``batch_size / W`` examples of
every global batch (a ``DistributedSampler``; the union of the per-process
batches is the single-process batch) and ``DistributedDataParallel`` averages
the gradients, so W processes follow the single-process run up to float
rounding (models without BatchNorm: BatchNorm's statistics are per process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from . import _backend
from .convert import to_torch
from .data import DATASETS, load_dataset
from .models import VISION_MODELS, xavier_init
from .nn import CrossEntropyLoss

__all__ = ["TrainConfig", "main", "parse_args", "train"]

BACKENDS = ("native", "python", "torch")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; ``None`` fields take the model's book recipe."""

    model: str = "lenet_relu"
    dataset: str = "mnist5k"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    shift: int | None = None
    device: str = "cpu"
    backend: str = "native"
    out: str | None = None
    resume: bool = False
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    num_workers: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    stop_after: int | None = None
    progress: bool = True
    plot: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with the recipe filled in and the arguments checked."""
        if self.model not in VISION_MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(VISION_MODELS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        spec = VISION_MODELS[self.model]
        c = dataclasses.replace(
            self,
            epochs=spec.epochs if self.epochs is None else self.epochs,
            lr=spec.lr if self.lr is None else self.lr,
            batch_size=spec.batch_size if self.batch_size is None else self.batch_size,
            momentum=spec.momentum if self.momentum is None else self.momentum,
            weight_decay=spec.weight_decay if self.weight_decay is None else self.weight_decay,
            schedule=spec.schedule if self.schedule is None else self.schedule,
            shift=spec.shift if self.shift is None else self.shift,
            out=self.out or os.path.join("runs", f"{self.model}-{self.dataset}-{self.backend}"),
        )
        for name in ("epochs", "batch_size"):
            if getattr(c, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(c, name)}")
        if not c.lr > 0:
            raise ValueError(f"--lr must be positive, got {c.lr}")
        if c.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {SCHEDULES}, got {c.schedule!r}")
        if c.stop_after is not None and c.stop_after < 1:
            raise ValueError(f"--stop-after must be at least 1, got {c.stop_after}")
        if c.shift < 0:
            raise ValueError(f"--shift must be >= 0, got {c.shift}")
        if c.num_workers < 0:
            raise ValueError(f"--num-workers must be >= 0, got {c.num_workers}")
        return c


# ----------------------------------------------------------------------------- distributed


@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_sum(values: list[float], d: _Dist) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- pieces


def _device(name: str, d: _Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is visible")
        if dev.index is None:
            dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    return dev


def build_model(cfg: TrainConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    """The model with the book's Xavier initialisation, seeded by ``cfg.seed``
    (so every backend starts from the same weights); torch.nn layers for
    ``--backend torch``."""
    torch.manual_seed(cfg.seed)
    model = VISION_MODELS[cfg.model].factory(in_channels=in_channels, num_classes=num_classes)
    model.apply(xavier_init)
    return to_torch(model) if cfg.backend == "torch" else model


class Batches(Dataset):
    """Whole batches of an in-memory image set: ``batches[indices]`` is (images
    float32 (B, C, H, W) in [0, 1], labels int64 (B,)) — the same numbers as
    stacking ``ImageDataset`` items, in one indexing call instead of B Python
    calls. Used with a ``BatchSampler`` and ``batch_size=None``; pickles, so
    ``num_workers > 0`` works with any start method."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx].to(torch.float32).div_(255.0), self.targets[idx]


def _fixed_subset(data: Batches, n: int | None) -> Batches:
    """``n`` examples drawn by a fixed permutation (the files are sorted by class,
    so the first ``n`` would be one class), the same whatever ``--seed``."""
    if n is None:
        return data
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: min(n, len(data))]
    return Batches(data.images[order], data.targets[order])


def _loaders(cfg: TrainConfig, d: _Dist) -> tuple[DataLoader, DataLoader, int, int, DistributedSampler]:
    # Images are resized a batch at a time in the loop (one interpolate call), not per item.
    train_set, test_set = load_dataset(cfg.dataset, root=cfg.data_dir, download=cfg.download)
    in_channels, num_classes = train_set.images.shape[1], len(train_set.classes)
    train_data = _fixed_subset(Batches(train_set.images, train_set.targets), cfg.limit_train)
    test_data = _fixed_subset(Batches(test_set.images, test_set.targets), cfg.limit_test)
    if cfg.batch_size % d.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {d.world} processes")
    # The sampler's permutation depends only on (seed, epoch): resuming and
    # changing the process count give the same global batches; process r takes
    # positions r, r + W, ... of the permutation, so the union of the processes'
    # i-th batches of batch_size / W is the single-process i-th batch.
    sampler = DistributedSampler(train_data, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed)
    extra: dict[str, Any] = {}
    if cfg.num_workers > 0:
        # "spawn" works on every platform (the data pickles); workers persist across epochs.
        extra = {"multiprocessing_context": "spawn", "persistent_workers": True}
    per_process = cfg.batch_size // d.world
    batches = BatchSampler(sampler, per_process, drop_last=False)
    train = DataLoader(train_data, batch_size=None, sampler=batches, num_workers=cfg.num_workers, **extra)
    shard = list(range(d.rank, len(test_data), d.world))  # each process scores its share
    test = DataLoader(test_data, batch_size=None, sampler=BatchSampler(shard, 256, drop_last=False),
                      num_workers=cfg.num_workers, **extra)
    return train, test, in_channels, num_classes, sampler


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Constant (the book's) or cosine decay from ``lr`` to 0 over the run, per step."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / total)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] to (N, C, size, size), bilinear as the book's
    ``transforms.Resize`` (the same maths as ``ImageDataset(resize=size)``)."""
    if x.shape[-2:] == (size, size):
        return x
    y = torch.nn.functional.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.clamp_(0, 1)


def random_shift(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Data augmentation: each image (N, C, H, W) moved by a random whole number
    of pixels in [-pixels, pixels] along each axis, the border filled with 0
    (the background). Draws from torch's global RNG, so a resumed run repeats it."""
    if pixels == 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pixels,) * 4)  # (N, C, H + 2p, W + 2p)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n, 1)).to(x.device)
    rows = torch.arange(h, device=x.device) + dy  # (N, H)
    cols = torch.arange(w, device=x.device) + dx  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    # Indexed straight into (N, C, H, W) with standard strides: a permuted result of
    # one channel would pass for channels-last and send the convolutions down their
    # layout-converting paths.
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Loss, train accuracy and test accuracy against epoch, as the book's animator draws them."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(epochs, [h["train_loss"] for h in history], "-", label="train loss")
    ax.plot(epochs, [h["train_acc"] for h in history], "--", label="train acc")
    ax.plot(epochs, [h["test_acc"] for h in history], "-.", label="test acc")
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs) + 0.5)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _progress(total: int, cfg: TrainConfig, d: _Dist, desc: str):
    if not (cfg.progress and d.main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", dynamic_ncols=True, mininterval=0.5)


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, d: _Dist, size: int) -> float:
    """Test accuracy over every process's share of the test set (images resized to ``size``)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = resize_batch(x.to(device), size), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
            total += y.numel()
    correct, total = _all_sum([correct, total], d)
    return correct / max(total, 1)


def _machine(cfg: TrainConfig, d: _Dist, device: torch.device) -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "processes": d.world,
        "kernels": cfg.backend,
    }


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training job; returns the metrics that ``metrics.json`` holds."""
    cfg = cfg.resolved()
    d = _init_distributed(cfg.device)
    device = _device(cfg.device, d)
    if cfg.backend != "torch":
        _backend.set_backend(cfg.backend)
    out = Path(cfg.out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    train_loader, test_loader, in_channels, num_classes, sampler = _loaders(cfg, d)
    model = build_model(cfg, in_channels, num_classes).to(device)
    loss_fn = torch.nn.CrossEntropyLoss() if cfg.backend == "torch" else CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg, len(train_loader))

    history: list[dict] = []
    start_epoch = 0
    ckpt_path = out / "checkpoint.pt"
    if cfg.resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["model_name"] != cfg.model or ckpt["world"] != d.world:
            raise ValueError(
                f"--resume: {ckpt_path} is a {ckpt['model_name']} run on {ckpt['world']} process(es), "
                f"not {cfg.model} on {d.world}"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        torch.set_rng_state(ckpt["rng"][d.rank])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"][d.rank], device)
    net = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    title = f"{cfg.model} on {cfg.dataset}, {cfg.backend} kernels"
    size = VISION_MODELS[cfg.model].image_size
    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
    for epoch in range(start_epoch, end):
        sampler.set_epoch(epoch)
        net.train()
        bar = _progress(len(sampler.dataset), cfg, d, f"epoch {epoch + 1}/{cfg.epochs}")
        loss_sum = correct = seen = 0.0
        t0 = time.perf_counter()
        for x, y in train_loader:
            x = resize_batch(random_shift(x.to(device, non_blocking=True), cfg.shift), size)
            y = y.to(device, non_blocking=True)
            logits = net(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n = y.numel()
            loss_sum += loss.item() * n
            correct += (logits.argmax(1) == y).sum().item()
            seen += n
            if bar is not None:
                bar.update(n * d.world)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        loss_sum, correct, seen = _all_sum([loss_sum, correct, seen], d)
        test_acc = evaluate(net, test_loader, device, d, size)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "test_acc": test_acc,
            "seconds": seconds,
            "examples_per_s": seen / seconds,
        }
        history.append(record)
        if bar is not None:
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                            test=f"{test_acc:.3f}", ex_s=f"{record['examples_per_s']:.0f}")
            bar.close()
        rngs = _gather_rng(d, device)
        if d.main:
            _save_epoch(cfg, d, device, model, (opt, sched), history, epoch + 1, rngs, out, title)
    if d.world > 1:
        dist.barrier()
    return _metrics(cfg, d, device, history)


def _gather_rng(d: _Dist, device: torch.device) -> tuple[list, list | None]:
    """Every process's RNG state (dropout masks differ per process), gathered on all."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    if d.world == 1:
        return [cpu], None if cuda is None else [cuda]
    states: list = [None] * d.world
    dist.all_gather_object(states, (cpu, cuda))
    return [s[0] for s in states], None if cuda is None else [s[1] for s in states]


def _metrics(cfg: TrainConfig, d: _Dist, device: torch.device, history: list[dict]) -> dict:
    last = history[-1] if history else {}
    seconds = sum(h["seconds"] for h in history)
    examples = sum(h["examples_per_s"] * h["seconds"] for h in history)
    return {
        "config": dataclasses.asdict(cfg),
        "machine": _machine(cfg, d, device),
        "history": history,
        "final": {
            "epochs": len(history),
            "train_loss": last.get("train_loss", math.nan),
            "train_acc": last.get("train_acc", math.nan),
            "test_acc": last.get("test_acc", math.nan),
            "train_seconds": seconds,
            "examples_per_s": examples / seconds if seconds else math.nan,
        },
    }


def _save_epoch(cfg, d, device, model, opt, history, epoch, rngs, out: Path, title: str) -> None:
    ckpt = {
        "model_name": cfg.model,
        "world": d.world,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": opt[0].state_dict(),
        "scheduler": opt[1].state_dict(),
        "history": history,
        "rng": rngs[0],
        "cuda_rng": rngs[1],
        "config": dataclasses.asdict(cfg),
    }
    _atomic_write(out / "checkpoint.pt", lambda tmp: torch.save(ckpt, tmp))
    metrics = _metrics(cfg, d, device, history)
    _atomic_write(
        out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2) + "\n")
    )
    if cfg.plot:
        plot_curves(history, out / "curves.png", title)


# ----------------------------------------------------------------------------- command line


def build_parser(prog: str = "d2l-ext train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train one of the book's networks on d2l_ext layers (defaults: the book's recipe).",
    )
    p.add_argument("model", choices=list(VISION_MODELS), metavar="MODEL", help=", ".join(VISION_MODELS))
    p.add_argument("--dataset", default="mnist5k", choices=DATASETS,
                   help="mnist5k: 5,000 real MNIST digits, offline (default); fashion-mnist: the book's")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the book's for MODEL)")
    p.add_argument("--lr", type=float, help="SGD learning rate (default: the book's for MODEL)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the book's for MODEL)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default: MODEL's recipe; the book: 0)")
    p.add_argument("--weight-decay", type=float, help="L2 penalty (default: MODEL's recipe; the book: 0)")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate per step: constant (the book) or cosine decay to 0 (default: recipe)")
    p.add_argument("--shift", type=int,
                   help="augment: move training images by up to N pixels (default: recipe; the book: 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--backend", default="native", choices=BACKENDS,
                   help="native kernels, the python fallback, or torch.nn's layers")
    p.add_argument("--out", help="output folder (default: runs/MODEL-DATASET-BACKEND)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="folder holding the dataset files (fashion-mnist)")
    p.add_argument("--download", action="store_true", help="download fashion-mnist if missing")
    p.add_argument("--num-workers", type=int, default=0, help="data loader processes (default 0)")
    p.add_argument("--limit-train", type=int, metavar="N", help="train on N examples (a fixed random subset)")
    p.add_argument("--limit-test", type=int, metavar="N", help="test on N examples (a fixed random subset)")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="end this run after N epochs (the schedule still spans --epochs; --resume goes on)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw curves.png")
    return p


def parse_args(argv: Sequence[str] | None = None, prog: str = "d2l-ext train") -> TrainConfig:
    args = build_parser(prog).parse_args(argv)
    return TrainConfig(**vars(args))


def main(argv: Sequence[str] | None = None, prog: str = "d2l-ext train") -> int:
    cfg = parse_args(argv, prog)
    try:
        metrics = train(cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    f, c = metrics["final"], metrics["config"]
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{c['model']} on {c['dataset']} ({c['backend']} kernels, {metrics['machine']['processes']} "
            f"process(es)): test accuracy {f['test_acc']:.4f}, train accuracy {f['train_acc']:.4f}, "
            f"loss {f['train_loss']:.4f} after {f['epochs']} epochs; {f['train_seconds']:.1f} s training, "
            f"{f['examples_per_s']:.0f} examples/s. Curves: {Path(c['out']) / 'curves.png'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m d2l_ext.train"))
