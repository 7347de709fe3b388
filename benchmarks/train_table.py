"""The training table of the README: the book's networks trained on the offline
digits with each backend, in one process.

    python -m benchmarks.train_table [--models lenet_relu lenet] [--backends native torch python]
                                     [--rounds 2] [--out benchmarks/results]

Each (model, backend) runs ``d2l_ext.train`` with the model's default recipe;
the backends take turns (native, torch, python, native, torch, ...) ``--rounds``
times, so a busy moment of the machine does not land on one backend only. The
table gives each run's final test accuracy (the same in every round: same seed)
and the median over rounds of the training examples per second (the epochs'
total examples over their total time, data loading and the SGD update
included). Writes ``train-<device>.md`` and ``.json``.

``--lm [--lm-epochs 50] [--corpus PATH]``: the language-model table instead,
tokens/s of ``d2l-ext train-lm`` (GRU and LSTM, the book's recipe, native and
torch in turns), written to ``train-lm-cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from d2l_ext.train import TrainConfig, train

from .common import describe_machine, format_markdown, machine_info


def lm_table(
    cells: list[str], backends: list[str], rounds: int, epochs: int, corpus: str | None, out: Path
) -> str:
    """tokens/s of ``d2l-ext train-lm`` (the book's recipe, ``epochs`` epochs) per cell and backend."""
    from d2l_ext.train_lm import LMConfig, train_lm

    speed: dict[tuple[str, str], list[float]] = {}
    ppl: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cell in cells:
            for r in range(rounds):
                for backend in backends:
                    cfg = LMConfig(
                        cell=cell,
                        backend=backend,
                        epochs=epochs,
                        corpus=corpus,
                        progress=False,
                        plot=False,
                        checkpoint_every=epochs,
                        out=str(Path(tmp) / f"{cell}-{backend}-{r}"),
                    )
                    f = train_lm(cfg)["final"]
                    print(
                        f"{cell} {backend} round {r + 1}: perplexity {f['perplexity']:.3f}, "
                        f"{f['tokens_per_s']:.0f} tokens/s",
                        flush=True,
                    )
                    speed.setdefault((cell, backend), []).append(f["tokens_per_s"])
                    ppl[(cell, backend)] = f["perplexity"]
    headers = ["cell", "backend", f"perplexity after {epochs} epochs", "tokens/s", "vs torch"]
    rows = []
    for cell in cells:
        med = {b: statistics.median(speed[(cell, b)]) for b in backends}
        for b in backends:
            ratio = f"{med[b] / med['torch']:.2f}x" if "torch" in med else "-"
            rows.append([cell, b, f"{ppl[(cell, b)]:.3f}", f"{med[b]:.0f}", ratio])
    info = machine_info("cpu")
    md = (
        f"**language model** (`d2l-ext train-lm`, the book's recipe, {epochs} epochs) - "
        f"{describe_machine(info)}\n\n"
        + format_markdown(headers, rows)
        + f"\n\n- tokens/s: median over {rounds} round(s), backends in turns.\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "train-lm-cpu.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet_relu", "lenet"])
    p.add_argument("--backends", nargs="+", default=["native", "torch", "python"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--python-rounds", type=int, default=1, help="rounds of the slow python backend")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--lm", action="store_true", help="the language-model table instead (train-lm)")
    p.add_argument("--lm-epochs", type=int, default=50)
    p.add_argument("--corpus", help="timemachine.txt for --lm")
    args = p.parse_args(argv)
    if args.lm:
        backends = [b for b in args.backends if b != "python"]
        print(lm_table(["gru", "lstm"], backends, args.rounds, args.lm_epochs, args.corpus, args.out))
        return 0

    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for r in range(args.rounds):
                for backend in args.backends:
                    if backend == "python" and r >= args.python_rounds:
                        continue
                    cfg = TrainConfig(
                        model=model,
                        backend=backend,
                        device=args.device,
                        progress=False,
                        plot=False,
                        out=str(Path(tmp) / f"{model}-{backend}-{r}"),
                    )
                    m = train(cfg)
                    f = m["final"]
                    print(
                        f"{model} {backend} round {r + 1}: test acc {f['test_acc']:.4f}, "
                        f"{f['examples_per_s']:.0f} examples/s, {f['train_seconds']:.1f} s",
                        flush=True,
                    )
                    runs.setdefault((model, backend), []).append(m)

    headers = [
        "model",
        "epochs",
        "batch",
        "recipe",
        "backend",
        "test acc",
        "train acc",
        "train s",
        "examples/s",
        "vs torch",
    ]
    rows, records = [], []
    for model in args.models:
        speed = {
            b: statistics.median(m["final"]["examples_per_s"] for m in runs[(model, b)])
            for b in args.backends
        }
        for backend in args.backends:
            ms = runs[(model, backend)]
            c, f = ms[0]["config"], ms[0]["final"]
            recipe = (
                f"lr {c['lr']:g}"
                + (f", momentum {c['momentum']:g}" if c["momentum"] else "")
                + (f", {c['schedule']}" if c["schedule"] != "constant" else "")
                + (f", shift {c['shift']}" if c["shift"] else "")
            )
            seconds = statistics.median(m["final"]["train_seconds"] for m in ms)
            ratio = speed[backend] / speed["torch"] if "torch" in speed else None
            rows.append(
                [
                    model,
                    str(c["epochs"]),
                    str(c["batch_size"]),
                    recipe,
                    backend,
                    f"{f['test_acc']:.4f}",
                    f"{f['train_acc']:.4f}",
                    f"{seconds:.1f}",
                    f"{speed[backend]:.0f}",
                    "-" if ratio is None else f"{ratio:.2f}x",
                ]
            )
            records.append(
                {
                    "model": model,
                    "backend": backend,
                    "config": c,
                    "test_acc": [m["final"]["test_acc"] for m in ms],
                    "examples_per_s": [m["final"]["examples_per_s"] for m in ms],
                    "train_seconds": [m["final"]["train_seconds"] for m in ms],
                    "history": ms[0]["history"],
                }
            )
    info = machine_info(args.device)
    tag = "cpu" if args.device == "cpu" else torch.cuda.get_device_name().lower().replace(" ", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    md = (
        "**training** on the offline digits (mnist5k: 4,000 train / 1,000 test) - "
        f"{describe_machine(info)}\n\n"
        + format_markdown(headers, rows)
        + f"\n\n- examples/s: median over {args.rounds} round(s) (python: {args.python_rounds}), "
        'backends in turns; "vs torch" = examples/s over torch.nn\'s on the same net and initial weights.\n'
    )
    (args.out / f"train-{tag}.md").write_text(md)
    report = {"machine": info, "runs": records}
    (args.out / f"train-{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
