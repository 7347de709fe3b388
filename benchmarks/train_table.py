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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet_relu", "lenet"])
    p.add_argument("--backends", nargs="+", default=["native", "torch", "python"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--python-rounds", type=int, default=1, help="rounds of the slow python backend")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)

    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for r in range(args.rounds):
                for backend in args.backends:
                    if backend == "python" and r >= args.python_rounds:
                        continue
                    cfg = TrainConfig(model=model, backend=backend, device=args.device, progress=False,
                                      plot=False, out=str(Path(tmp) / f"{model}-{backend}-{r}"))
                    m = train(cfg)
                    f = m["final"]
                    print(f"{model} {backend} round {r + 1}: test acc {f['test_acc']:.4f}, "
                          f"{f['examples_per_s']:.0f} examples/s, {f['train_seconds']:.1f} s", flush=True)
                    runs.setdefault((model, backend), []).append(m)

    headers = ["model", "epochs", "batch", "recipe", "backend", "test acc", "train acc", "train s",
               "examples/s", "vs torch"]
    rows, records = [], []
    for model in args.models:
        speed = {b: statistics.median(m["final"]["examples_per_s"] for m in runs[(model, b)])
                 for b in args.backends}
        for backend in args.backends:
            ms = runs[(model, backend)]
            c, f = ms[0]["config"], ms[0]["final"]
            recipe = f"lr {c['lr']:g}" + (f", momentum {c['momentum']:g}" if c["momentum"] else "") + (
                f", {c['schedule']}" if c["schedule"] != "constant" else "") + (
                f", shift {c['shift']}" if c["shift"] else "")
            seconds = statistics.median(m["final"]["train_seconds"] for m in ms)
            ratio = speed[backend] / speed["torch"] if "torch" in speed else None
            rows.append([
                model, str(c["epochs"]), str(c["batch_size"]), recipe, backend, f"{f['test_acc']:.4f}",
                f"{f['train_acc']:.4f}", f"{seconds:.1f}", f"{speed[backend]:.0f}",
                "-" if ratio is None else f"{ratio:.2f}x",
            ])
            records.append({"model": model, "backend": backend, "config": c,
                            "test_acc": [m["final"]["test_acc"] for m in ms],
                            "examples_per_s": [m["final"]["examples_per_s"] for m in ms],
                            "train_seconds": [m["final"]["train_seconds"] for m in ms],
                            "history": ms[0]["history"]})
    info = machine_info(args.device)
    tag = "cpu" if args.device == "cpu" else torch.cuda.get_device_name().lower().replace(" ", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    md = (
        "**training** on the offline digits (mnist5k: 4,000 train / 1,000 test) - "
        f"{describe_machine(info)}\n\n" + format_markdown(headers, rows)
        + f"\n\n- examples/s: median over {args.rounds} round(s) (python: {args.python_rounds}), "
        "backends in turns; \"vs torch\" = examples/s over torch.nn's on the same net and initial weights.\n"
    )
    (args.out / f"train-{tag}.md").write_text(md)
    report = {"machine": info, "runs": records}
    (args.out / f"train-{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
