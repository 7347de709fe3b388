"""The ``d2l-ext`` command.

``d2l-ext info``   how the library was built and which backend runs.
``d2l-ext train``  train one of the book's networks (see ``d2l_ext.train``):
                   ``d2l-ext train lenet_relu`` on the offline MNIST digits.
``d2l-ext train-lm`` the book's RNN/GRU/LSTM language model on The Time Machine.
``d2l-ext check``  every op against torch's native op (max error of values
                   and gradients) and a short timing of native vs torch vs
                   the Python fallback, printed as a table.
``d2l-ext bench``  the full benchmarks and their summary: ``python -m benchmarks``
                   (``d2l-ext bench --help``); needs a source checkout, the
                   ``benchmarks`` folder is not part of the installed package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as torch_F
from torch.utils import benchmark

from . import _backend, _ops, functional


@dataclass
class CheckCase:
    op: str
    label: str
    make: Callable[[torch.device, torch.dtype], tuple]  # -> (inputs..., kwargs)
    ours: Callable
    theirs: Callable


def _ce_inputs(n: int, c: int, spatial: tuple[int, ...] = (), prob: bool = False, **kw):
    def make(device, dtype):
        x = (torch.randn(n, c, *spatial, device=device, dtype=dtype) * 3).requires_grad_()
        if prob:
            t = torch.softmax(torch.randn(n, c, *spatial, device=device, dtype=dtype), 1)
        else:
            t = torch.randint(0, c, (n, *spatial), device=device)
        kwargs = dict(kw)
        if kwargs.pop("weighted", False):
            kwargs["weight"] = torch.rand(c, device=device, dtype=dtype) + 0.5
        return (x, t), kwargs

    return make


def _pool_inputs(shape: tuple[int, ...], channels_last: bool = False, **kw):
    def make(device, dtype):
        x = torch.randn(*shape, device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (x.requires_grad_(),), dict(kw)

    return make


def _pool_cases() -> list[CheckCase]:
    F, T = functional, torch_F
    return [
        CheckCase(
            "avg_pool2d",
            "LeNet 2/2 (64,6,28,28)",
            _pool_inputs((64, 6, 28, 28), kernel_size=2),
            F.avg_pool2d,
            T.avg_pool2d,
        ),
        CheckCase(
            "max_pool2d",
            "AlexNet 3/2 (8,96,54,54)",
            _pool_inputs((8, 96, 54, 54), kernel_size=3, stride=2),
            F.max_pool2d,
            T.max_pool2d,
        ),
        CheckCase(
            "max_pool2d",
            "ResNet stem 3/2 pad 1 channels_last (8,64,48,48)",
            _pool_inputs((8, 64, 48, 48), True, kernel_size=3, stride=2, padding=1),
            F.max_pool2d,
            T.max_pool2d,
        ),
        CheckCase(
            "adaptive_avg_pool2d",
            "global (32,512,3,3)",
            _pool_inputs((32, 512, 3, 3), output_size=1),
            F.adaptive_avg_pool2d,
            T.adaptive_avg_pool2d,
        ),
        CheckCase(
            "max_pool1d",
            "TextCNN max-over-time (64,100,48)",
            _pool_inputs((64, 100, 48), kernel_size=48),
            F.max_pool1d,
            T.max_pool1d,
        ),
    ]


def _conv_inputs(n: int, c: int, o: int, size: int, k: int, **kw):
    def make(device, dtype):
        x = torch.randn(n, c, size, size, device=device, dtype=dtype).requires_grad_()
        w = torch.randn(o, c, k, k, device=device, dtype=dtype) / (c * k * k) ** 0.5
        return (x, w, torch.randn(o, device=device, dtype=dtype)), dict(kw)

    return make


def _rnn_inputs(kind: str, steps: int, batch: int, vocab: int, hidden: int, layers: int):
    """Inputs of the functional layers (torch.lstm's signature): x, h0, (c0,) params."""

    def make(device, dtype):
        module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(vocab, hidden, layers)
        params = [p.detach().to(device, dtype) for p in module._flat_weights]
        x = torch.randn(steps, batch, vocab, device=device, dtype=dtype).requires_grad_()
        h0 = torch.zeros(layers, batch, hidden, device=device, dtype=dtype)
        return ((x, h0, h0, params) if kind == "lstm" else (x, h0, params)), {}

    return make


def _layer(fn, kind: str, layers: int) -> Callable:
    if kind == "lstm":
        return lambda x, h0, c0, params: fn(x, (h0, c0), params, True, layers, 0.0, True, False, False)[0]
    return lambda x, h0, params: fn(x, h0, params, True, layers, 0.0, True, False, False)[0]


def _rnn_cases() -> list[CheckCase]:
    F = functional
    return [
        CheckCase(
            "conv2d", "LeNet c1 (64,1,28,28) 6x5x5 pad 2", _conv_inputs(64, 1, 6, 28, 5, padding=2),
            F.conv2d, torch_F.conv2d,
        ),
        CheckCase(
            "lstm", "T35 B32 I28 H256, 2 layers", _rnn_inputs("lstm", 35, 32, 28, 256, 2),
            _layer(F.lstm, "lstm", 2), _layer(torch.lstm, "lstm", 2),
        ),
        CheckCase(
            "gru", "T35 B32 I28 H256", _rnn_inputs("gru", 35, 32, 28, 256, 1),
            _layer(F.gru, "gru", 1), _layer(torch.gru, "gru", 1),
        ),
    ]


def _cases() -> list[CheckCase]:
    ce, tce = functional.cross_entropy, torch_F.cross_entropy
    return _pool_cases() + _rnn_cases() + [
        CheckCase("cross_entropy", "N=256 C=10", _ce_inputs(256, 10), ce, tce),
        CheckCase(
            "cross_entropy",
            "N=64 C=1000 smooth=0.1 weighted",
            _ce_inputs(64, 1000, label_smoothing=0.1, weighted=True),
            ce,
            tce,
        ),
        CheckCase("cross_entropy", "N=8 C=21 8x8 (spatial)", _ce_inputs(8, 21, (8, 8)), ce, tce),
        CheckCase("cross_entropy", "N=64 C=100 prob targets", _ce_inputs(64, 100, prob=True), ce, tce),
        CheckCase(
            "cross_entropy", "N=16 C=32000 reduction=sum", _ce_inputs(16, 32000, reduction="sum"), ce, tce
        ),
    ]


def _run(fn, args, kwargs):
    x = args[0]
    out = fn(*args, **kwargs)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def _time_ms(fn, args, kwargs, min_run_time: float) -> float:
    timer = benchmark.Timer(
        stmt="fn(*args, **kwargs).sum().backward()",
        globals={"fn": fn, "args": args, "kwargs": kwargs},
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def check(device: str, quick: bool) -> int:
    dev = torch.device(device)
    dtype = torch.float32
    rows = []
    worst = 0.0
    for case in _cases():
        torch.manual_seed(0)
        args, kwargs = case.make(dev, dtype)
        ref_out, ref_grad = _run(case.theirs, args, kwargs)
        out, grad = _run(case.ours, args, kwargs)
        err = max(
            ((out - ref_out).abs().max() / ref_out.abs().max().clamp_min(1e-30)).item(),
            ((grad - ref_grad).abs().max() / ref_grad.abs().max().clamp_min(1e-30)).item(),
        )
        worst = max(worst, err)
        t = 0.05 if quick else 0.3
        native = _time_ms(case.ours, args, kwargs, t)
        theirs = _time_ms(case.theirs, args, kwargs, t)
        with _backend.use_backend("python"):
            python = _time_ms(case.ours, args, kwargs, t)
        rows.append((case.op, case.label, err, native, theirs, python))

    header = ("op", "case", "max rel err", "ours ms", "torch ms", "python ms", "torch/ours")
    table = [header] + [
        (op, label, f"{e:.1e}", f"{a:.3f}", f"{b:.3f}", f"{c:.3f}", f"{b / a:.2f}x")
        for op, label, e, a, b, c in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(
        f"d2l_ext check on {device}, float32, fwd+bwd, backend={_backend.backend()}, "
        f"threads={torch.get_num_threads()}"
    )
    for i, r in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    # float32 arithmetic: values and gradients agree with torch to ~1e-6 relative;
    # 1e-4 leaves room for the different summation orders over up to 32000 classes.
    ok = worst < 1e-4
    print(f"{'OK' if ok else 'MISMATCH'}: worst relative error {worst:.1e} (limit 1e-4)")
    return 0 if ok else 1


def info() -> int:
    print(f"d2l_ext backend: {_backend.backend()}")
    print(f"compiled library loaded: {_ops.LOADED}" + ("" if _ops.LOADED else f" ({_ops.LOAD_ERROR})"))
    print(f"CUDA kernels compiled: {_backend.has_cuda_kernels()}")
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    return 0


BENCH_PROG = "d2l-ext bench"


def _benchmarks_main() -> Callable[..., int] | None:
    """``benchmarks.__main__.main`` of a source checkout; None when there is none.

    ``benchmarks`` is a top-level folder of the repository, not part of the
    wheel; the ``d2l-ext`` script does not have the checkout on ``sys.path``, so
    the checkout this package lives in (an editable install) and then the
    working directory are tried.
    """
    import importlib
    from pathlib import Path

    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "benchmarks" / "__init__.py").is_file() and str(root) not in sys.path:
            sys.path.insert(0, str(root))
            break
    try:
        module = importlib.import_module("benchmarks.__main__")
    except ModuleNotFoundError as err:
        if err.name not in ("benchmarks", "benchmarks.__main__"):
            raise  # a dependency of the benchmarks is missing: show it
        return None
    return getattr(module, "main", None)


def bench(argv: list[str]) -> int:
    """``d2l-ext bench [args]`` = ``python -m benchmarks [args]``."""
    run = _benchmarks_main()
    if run is None:
        print(
            "d2l-ext bench: the benchmarks package was not found. It is not installed with d2l_ext; "
            "run from a source checkout of the repository (its root folder holds benchmarks/), "
            "e.g. `cd d2l_ext-checkout && d2l-ext bench` or `python -m benchmarks`.",
            file=sys.stderr,
        )
        return 2
    return run(argv, prog=BENCH_PROG)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # python -m benchmarks' parser: d2l-ext bench --help
        return bench(argv[1:])
    if argv[:1] == ["train"]:  # its own parser: d2l-ext train --help
        from . import train

        return train.main(argv[1:])
    if argv[:1] == ["train-lm"]:
        from . import train_lm

        return train_lm.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="d2l-ext", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="compare every op with torch and time it")
    p_check.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p_check.add_argument("--quick", action="store_true", help="shorter timings")
    sub.add_parser("info", help="build and backend information")
    sub.add_parser("train", help="train one of the book's networks (d2l-ext train --help)")
    sub.add_parser("train-lm", help="train the book's RNN language model (d2l-ext train-lm --help)")
    sub.add_parser(
        "bench", help="run the benchmarks and write their summary, from a source checkout "
        "(d2l-ext bench --help)"
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.device, args.quick)
    return info()


if __name__ == "__main__":
    sys.exit(main())
