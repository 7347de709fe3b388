"""Train the book's recurrent language model on *The Time Machine*.

    d2l-ext train-lm gru --corpus ../shared/data/timemachine.txt
    d2l-ext train-lm lstm --layers 2 --backend torch

Defaults are the book's recipe (ch. 9, first edition's ``train_ch8``): characters,
the first 10,000 of them, batch 32, 35 steps, 256 hidden units, one-hot inputs,
SGD with learning rate 1, gradients clipped to norm 1, 500 epochs, sequential
partitioning (the state carries over between batches, detached). Each epoch
adds perplexity and tokens/s to ``OUT/metrics.json``; every ``--checkpoint-every``
epochs (and at the end) ``OUT/checkpoint.pt`` and ``OUT/curves.png`` are
rewritten atomically; ``--resume`` continues from the checkpoint to the same
numbers as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import _backend
from .convert import to_torch
from .data.text import load_data_time_machine
from .models import RNNLM
from .nn import CrossEntropyLoss
from .train import _atomic_write, _device, _Dist

__all__ = ["LMConfig", "main", "perplexity", "train_lm"]

CELLS = ("rnn", "gru", "lstm")


@dataclasses.dataclass
class LMConfig:
    """One language-model run (the defaults are the book's recipe)."""

    cell: str = "gru"
    layers: int = 1
    hidden: int = 256
    bidirectional: bool = False
    embedding: int | None = None
    dropout: float = 0.0
    epochs: int = 500
    lr: float = 1.0
    clip: float = 1.0
    batch_size: int = 32
    num_steps: int = 35
    max_tokens: int = 10000
    token: str = "char"
    sampler: str = "sequential"
    corpus: str | None = None
    download: bool = False
    backend: str = "native"
    device: str = "cpu"
    out: str | None = None
    resume: bool = False
    seed: int = 0
    checkpoint_every: int = 10
    prefix: str = "time traveller"
    progress: bool = True
    plot: bool = True

    def resolved(self) -> LMConfig:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.sampler not in ("random", "sequential"):
            raise ValueError(f"--sampler must be random or sequential, got {self.sampler!r}")
        if self.backend not in ("native", "python", "torch"):
            raise ValueError(f"--backend must be native, python or torch, got {self.backend!r}")
        for name in ("layers", "hidden", "epochs", "batch_size", "num_steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.clip > 0:
            raise ValueError(f"--lr and --clip must be positive, got {self.lr} and {self.clip}")
        out = self.out or os.path.join("runs", f"lm-{self.cell}-l{self.layers}-h{self.hidden}-{self.backend}")
        return dataclasses.replace(self, out=out)


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp of the mean negative log-likelihood per token (the book's measure)."""
    return math.exp(total_nll / num_tokens)


def _detached(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot([h["epoch"] for h in history], [h["perplexity"] for h in history], label="train perplexity")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def train_lm(cfg: LMConfig) -> dict:
    """Run (or resume) one language-model job; returns what ``metrics.json`` holds."""
    cfg = cfg.resolved()
    device = _device(cfg.device, _Dist())  # "auto", and a clear error for a missing GPU, as `d2l-ext train`
    if cfg.backend != "torch":
        _backend.set_backend(cfg.backend)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loader, vocab = load_data_time_machine(
        cfg.batch_size,
        cfg.num_steps,
        use_random_iter=cfg.sampler == "random",
        max_tokens=cfg.max_tokens,
        token=cfg.token,
        path=cfg.corpus,
        seed=cfg.seed,
        download=cfg.download,
    )
    torch.manual_seed(cfg.seed)
    model = RNNLM(
        len(vocab),
        cfg.hidden,
        cfg.layers,
        cfg.cell,
        bidirectional=cfg.bidirectional,
        embedding=cfg.embedding,
        dropout=cfg.dropout,
    )
    if cfg.backend == "torch":
        model = to_torch(model)
    model.to(device)
    loss_fn = torch.nn.CrossEntropyLoss() if cfg.backend == "torch" else CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    start = 0
    ckpt_path = out / "checkpoint.pt"
    if cfg.resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        history, start = ckpt["history"], ckpt["epoch"]
        torch.set_rng_state(ckpt["rng"])

    title = f"{cfg.cell} LM, {cfg.layers} layer(s), {cfg.hidden} hidden, {cfg.backend} kernels"
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, unit="epoch", dynamic_ncols=True, mininterval=0.5)
    random_iter = cfg.sampler == "random"
    for epoch in range(start, cfg.epochs):
        model.train()
        state, nll, tokens = None, 0.0, 0
        t0 = time.perf_counter()
        for x, y in loader.epoch(epoch):
            x, y = x.to(device), y.to(device)
            if state is None or random_iter:
                state = model.begin_state(x.shape[0], device)
            else:
                state = _detached(state)
            logits, state = model(x, state)
            target = y.T.reshape(-1)
            loss = loss_fn(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            nll += loss.item() * target.numel()
            tokens += target.numel()
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "perplexity": perplexity(nll, tokens),
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_s": tokens / seconds,
        }
        history.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                ppl=f"{record['perplexity']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False
            )
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            ckpt = {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "history": history,
                "rng": torch.get_rng_state(),
                "config": dataclasses.asdict(cfg),
                "vocab": vocab.idx_to_token,
            }
            _atomic_write(ckpt_path, lambda tmp, c=ckpt: torch.save(c, tmp))
            metrics = _metrics(cfg, history, model, vocab)
            _atomic_write(
                out / "metrics.json",
                lambda tmp, m=metrics: Path(tmp).write_text(json.dumps(m, indent=2) + "\n"),
            )
            if cfg.plot:
                _plot(history, out / "curves.png", title)
    if bar is not None:
        bar.close()
    return _metrics(cfg, history, model, vocab)


def _metrics(cfg: LMConfig, history: list[dict], model: RNNLM, vocab) -> dict:
    seconds = sum(h["seconds"] for h in history)
    tokens = sum(h["tokens"] for h in history)
    sample = (
        model.predict(cfg.prefix, 50, vocab)
        if cfg.token == "char"
        else model.predict(cfg.prefix.split(), 10, vocab)
    )
    return {
        "config": dataclasses.asdict(cfg),
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "kernels": cfg.backend},
        "vocab_size": len(vocab),
        "history": history,
        "final": {
            "epochs": len(history),
            "perplexity": history[-1]["perplexity"] if history else math.nan,
            "train_seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds else math.nan,
            "sample": sample,
        },
    }


def build_parser(prog: str = "d2l-ext train-lm") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Train the book's RNN language model on The Time Machine."
    )
    p.add_argument("cell", choices=CELLS)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--embedding", type=int, help="an embedding of this size instead of one-hot inputs")
    p.add_argument("--dropout", type=float, default=0.0, help="between layers")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (the book: 1)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (the book: 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-steps", type=int, default=35)
    p.add_argument("--max-tokens", type=int, default=10000, help="first N tokens of the corpus; -1: all")
    p.add_argument("--token", choices=("char", "word"), default="char")
    p.add_argument("--sampler", choices=("random", "sequential"), default="sequential")
    p.add_argument("--corpus", help="timemachine.txt (or its folder); default: see d2l_ext.data.text")
    p.add_argument("--download", action="store_true", help="download the corpus if it is not found")
    p.add_argument("--backend", choices=("native", "python", "torch"), default="native")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="output folder (default: runs/lm-CELL-lLAYERS-hHIDDEN-BACKEND)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=10, metavar="N")
    p.add_argument("--prefix", default="time traveller", help="text to continue at the end")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "d2l-ext train-lm") -> int:
    cfg = LMConfig(**vars(build_parser(prog).parse_args(argv)))
    try:
        m = train_lm(cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    f, c = m["final"], m["config"]
    print(
        f"{c['cell']} language model ({c['layers']} layer(s), {c['hidden']} hidden, {c['backend']} kernels): "
        f"training perplexity {f['perplexity']:.3f} after {f['epochs']} epochs; {f['train_seconds']:.1f} s, "
        f"{f['tokens_per_s']:.0f} tokens/s. {c['prefix']!r} -> {f['sample']!r}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m d2l_ext.train_lm"))
