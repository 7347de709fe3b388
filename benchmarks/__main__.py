"""``python -m benchmarks [op ...] [--device auto|cpu|cuda|all] [--quick] [--out DIR]``.

Runs the chosen op benchmarks (default: every one in ``benchmarks.OPS``) on the
chosen devices, prints one table per op and device and writes
``<out>/<op>-<device-tag>.json`` and ``.md`` (``-quick`` is added to the name
with ``--quick``, so a smoke test never overwrites real numbers). Then, for each
device it ran on, it writes the summary of every op's latest results there
(:mod:`benchmarks.report`): ``<out>/summary-<device-tag>[-quick].{md,json,png}``.

``python -m benchmarks --report-only [--device-tag TAG] [--quick]`` only writes
the summaries, from the result files already in ``--out``. ``d2l-ext bench``
is the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from . import OPS, load
from .common import (
    QUICK_TIMING,
    cpu_snapshot,
    device_tag,
    machine_info,
    others_cpu_share,
    run_cases,
    write_reports,
)
from .report import build_summaries

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _devices(choice: str) -> list[str]:
    has_cuda = torch.cuda.is_available()
    if choice == "auto":
        return ["cuda"] if has_cuda else ["cpu"]
    if choice == "all":
        return ["cpu", "cuda"] if has_cuda else ["cpu"]
    if choice == "cuda" and not has_cuda:
        raise SystemExit("benchmarks: --device cuda, but torch sees no CUDA device")
    return [choice]


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Time d2l_ext's ops against torch's and the Python fallback.",
    )
    parser.add_argument(
        "ops", nargs="*", metavar="op", help=f"benchmarks to run (default: all of {', '.join(OPS)})"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "all"),
        default="auto",
        help="auto (default): cuda when available, else cpu; all: cpu and, when available, cuda",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke test: the smallest shapes and a tiny min_run_time",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--min-run-time", type=float, default=None, metavar="S",
        help="seconds each timing runs at least (default 1.0; a GPU is steady at 0.3)",
    )
    parser.add_argument("--list", action="store_true", help="list the registered benchmarks")
    parser.add_argument(
        "--report-only", action="store_true",
        help="run nothing: write summary-<tag>.{md,json,png} from the result files in --out "
        "(with --quick: summary-<tag>-quick.* from the -quick files)",
    )
    parser.add_argument(
        "--device-tag", action="append", metavar="TAG",
        help="with --report-only: the device tag(s) to summarise, e.g. cpu or nvidia-h200 "
        "(default: every tag that has results)",
    )
    args = parser.parse_args(argv)

    if args.list:
        print("\n".join(OPS))
        return 0
    if args.report_only:
        if args.ops:
            parser.error("--report-only summarises every op's results; it takes no op names")
        return build_summaries(args.out, args.device_tag, quick=args.quick)
    if args.device_tag:
        parser.error("--device-tag goes with --report-only (a run summarises the devices it ran on)")
    unknown = [op for op in args.ops if op not in OPS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; registered: {', '.join(OPS)}")
    ops = args.ops or list(OPS)

    start = time.perf_counter()
    devices = _devices(args.device)
    for device in devices:
        for op in ops:
            module = load(op)
            cases = module.cases(device, args.quick)
            if args.quick:
                for case in cases:
                    case.timing = QUICK_TIMING
                    for impl in case.impls:
                        impl.timing = None
            elif args.min_run_time is not None:
                for case in cases:
                    case.timing = dataclasses.replace(
                        case.timing,
                        min_run_time=args.min_run_time,
                        max_run_time=max(case.timing.max_run_time, args.min_run_time),
                    )
            info = machine_info(device)
            op_start, cpu_start = time.perf_counter(), cpu_snapshot()
            print(f"{op} on {device}: {len(cases)} cases", file=sys.stderr, flush=True)
            records = run_cases(cases)
            elapsed = time.perf_counter() - op_start
            share = others_cpu_share(cpu_start, cpu_snapshot())
            write_reports(
                op, device, records, args.out, quick=args.quick, info=info,
                extra={
                    "wall_s": round(elapsed, 2),
                    "others_cpu_share": None if share is None else round(share, 3),
                },
            )
            print(f"  {op} on {device}: {elapsed:.1f} s", flush=True)
    print(f"total {time.perf_counter() - start:.1f} s")
    return build_summaries(args.out, [device_tag(d) for d in devices], quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
