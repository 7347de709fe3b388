"""The benchmark harness every op benchmark builds on.

An op module describes what to measure as a list of :class:`Case` objects: one
op, one shape, one device and dtype, one pass ("fwd+bwd" or "fwd"), a factory
that makes the inputs, and one :class:`Impl` per implementation ("native" =
d2l_ext's compiled kernels, "torch" = the torch op it mirrors, "python" =
d2l_ext's pure-Python fallback). :func:`run_cases` then, for each case, makes
the inputs once and runs every implementation on them one after another in
this process:

1. one warm-up call, whose outputs (and gradients) are compared with the
   "torch" implementation's;
2. the bytes the forward saves for backward, counted with
   ``torch.autograd.graph.saved_tensors_hooks`` (each storage once; storages
   of the case's inputs do not count) - on every device;
3. on CUDA, the peak memory of one call over what was allocated before it
   (``torch.cuda.reset_peak_memory_stats`` / ``max_memory_allocated``);
4. the time: ``torch.utils.benchmark.Timer.adaptive_autorange`` (blocks of
   calls until the IQR is under 10% of the median, between ``min_run_time``
   and ``max_run_time`` seconds); the **median** is reported. The Timer
   synchronises CUDA around each block and runs with the thread count torch
   has now (``torch.get_num_threads()``, recorded, not changed).

The "fwd+bwd" statement is ``out = forward(); torch.autograd.grad(out, leaves)``
(no ``.grad`` accumulates); "fwd" runs the forward alone, with the autograd
graph built as in training (the inputs require grad), and drops it.

:func:`write_reports` prints an aligned table and writes
``<op>-<device-tag>.json`` (machine info and every number) and
``<op>-<device-tag>.md`` (the same table in markdown).

Only torch, numpy and the standard library are used, so the harness runs on
any machine the package runs on.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils import benchmark as tbench

import d2l_ext
from d2l_ext import _ops

IMPLS = ("native", "torch", "python", "scratch")
IMPL_TITLES = {
    "native": "d2l_ext native",
    "torch": "torch",
    "python": "python fallback",
    "scratch": "the book's from-scratch code",
}
# Columns every op has; the others ("scratch") appear only in tables of ops that measure them.
CORE_IMPLS = ("native", "torch", "python")
REFERENCE_IMPL = "torch"  # what the other implementations' outputs are compared with

Inputs = dict  # name -> tensor (or any other argument); tensors that require grad are the leaves
Forward = Callable[[], Any]
Factory = Callable[[Inputs], Forward]


@dataclass(frozen=True)
class Timing:
    """How long to time one implementation of one case (seconds)."""

    min_run_time: float = 1.0
    max_run_time: float = 5.0
    threshold: float = 0.1  # adaptive_autorange stops once IQR / median is below this
    # > 1: the case's implementations are timed in turns, `rounds` times each
    # (blocked_autorange for min_run_time / rounds per turn), and the median of all
    # of an implementation's blocks is reported: when the machine's speed drifts (a
    # busy neighbour), every column then sees the same mix of fast and slow moments.
    rounds: int = 1


DEFAULT_TIMING = Timing()
QUICK_TIMING = Timing(min_run_time=0.02, max_run_time=0.2)


@dataclass
class Impl:
    """One implementation of a case.

    ``factory(inputs)`` returns a zero-argument callable that runs the op's
    forward on ``inputs`` and returns its output (a tensor or a tuple/list of
    them). ``backend`` is the d2l_ext backend selected while this
    implementation runs (None: leave it). ``timing`` overrides the case's.
    ``budget_s``: skip the timing ("-") when five calls would take longer,
    judged from the warm-up call. ``unavailable``: why it cannot run here.
    """

    name: str
    factory: Factory
    backend: str | None = None
    timing: Timing | None = None
    budget_s: float | None = None
    unavailable: str | None = None


@dataclass
class Case:
    """One row of the table: an op on one shape, device, dtype and pass."""

    op: str
    shape: str  # the label printed, e.g. "N=4096 C=1000"
    device: str  # "cpu" or "cuda"
    dtype: torch.dtype
    make_inputs: Callable[[], Inputs]
    impls: list[Impl]
    backward: bool = True  # True: "fwd+bwd", False: "fwd"
    params: dict[str, Any] = field(default_factory=dict)  # shape numbers etc., for the JSON
    timing: Timing = DEFAULT_TIMING
    rtol: float | None = None  # output check vs torch (relative to max |torch|); None: by dtype

    @property
    def pass_name(self) -> str:
        return "fwd+bwd" if self.backward else "fwd"


# ---------------------------------------------------------------- implementations


def native_unavailable_reason(device: str, kernel_op: str | None = None) -> str | None:
    """Why d2l_ext's native kernels cannot run on ``device`` (None when they can);
    ``kernel_op``: also require that op's kernel for the device type."""
    if not d2l_ext.native_available():
        return "d2l_ext._C not loaded"
    if device.startswith("cuda") and not d2l_ext.has_cuda_kernels():
        return "d2l_ext built without CUDA kernels"
    kind = torch.device(device).type
    if kernel_op is not None and not _ops.has_kernel(kernel_op, kind):
        return f"d2l_ext has no {kind} {kernel_op} kernel"
    return None


def standard_impls(
    d2l_factory: Factory,
    torch_factory: Factory,
    device: str,
    *,
    python_timing: Timing | None = None,
    python_budget_s: float | None = None,
    kernel_op: str | None = None,
) -> list[Impl]:
    """The usual three columns: d2l_ext on the native backend, torch, d2l_ext on the Python one.

    ``d2l_factory`` builds a call of the ``d2l_ext.functional`` op; it is used
    twice, once under ``use_backend("native")`` and once under ``"python"``.
    ``kernel_op``: the native column needs that op's kernel on the device.
    """
    return [
        Impl(
            "native", d2l_factory, backend="native", unavailable=native_unavailable_reason(device, kernel_op)
        ),
        Impl("torch", torch_factory),
        Impl(
            "python",
            d2l_factory,
            backend="python",
            timing=python_timing,
            budget_s=python_budget_s,
        ),
    ]


# ---------------------------------------------------------------- measurements


def _flat_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flat_tensors(item)]
    return []


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    return (str(t.device), ptr) if ptr else None


def saved_for_backward_bytes(forward: Forward, inputs: Inputs) -> int:
    """Bytes the forward keeps for backward.

    Sums ``numel * element_size`` of the tensors autograd saves during one
    call of ``forward`` (``saved_tensors_hooks``), counting each storage once
    (its largest saved view, at most the storage's size) and leaving out the
    tensors whose storage is one of the inputs' (saving an input costs nothing
    extra). The graph is dropped afterwards; nothing runs backward.
    """
    input_keys = {_storage_key(t) for t in _flat_tensors(inputs)} - {None}
    per_storage: dict[Any, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key in input_keys:
            return t
        nbytes = t.numel() * t.element_size()
        if key is None:
            key = ("anon", id(t))
        else:
            nbytes = min(nbytes, t.untyped_storage().nbytes())
        per_storage[key] = max(per_storage.get(key, 0), nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(per_storage.values())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def cuda_peak_bytes(stmt: Callable[[], None]) -> tuple[int, int]:
    """(peak allocated during one ``stmt()`` minus what was allocated before, the latter)."""
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    stmt()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before, before


def _default_rtol(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-7, torch.float32: 1e-4}.get(dtype, 3e-2)


def _compare(results: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> dict:
    """max |a - b| and that divided by max |b| over the paired tensors."""
    if len(results) != len(reference):
        return {"error": f"{len(results)} tensors vs {len(reference)}"}
    abs_err, scale = 0.0, 0.0
    for a, b in zip(results, reference):
        if a.shape != b.shape:
            return {"error": f"shape {list(a.shape)} vs {list(b.shape)}"}
        if b.numel() == 0:
            continue
        a, b = a.double(), b.double()
        abs_err = max(abs_err, float((a - b).abs().max()))
        scale = max(scale, float(b.abs().max()))
    return {"max_abs_err": abs_err, "max_rel_err": abs_err / scale if scale else abs_err}


def _make_stmt(forward: Forward, leaves: list[torch.Tensor], backward: bool):
    """The timed statement, and the call that also returns outputs and gradients."""
    if not backward:

        def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            return [t.detach() for t in _flat_tensors(forward())], []

        def stmt() -> None:
            forward()

        return stmt, run

    if not leaves:
        raise ValueError("a fwd+bwd case needs inputs that require grad")
    first = [t for t in _flat_tensors(forward()) if t.requires_grad]
    gen = torch.Generator(device=first[0].device).manual_seed(1234) if first else None
    grad_outputs = [
        None if t.dim() == 0
        else torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype)
        for t in first
    ]
    del first

    def differentiable(out: Any) -> list[torch.Tensor]:
        if isinstance(out, torch.Tensor):
            return [out]
        return [t for t in _flat_tensors(out) if t.requires_grad]

    def stmt() -> None:
        torch.autograd.grad(differentiable(forward()), leaves, grad_outputs=grad_outputs)

    def run() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outs = differentiable(forward())
        grads = torch.autograd.grad(outs, leaves, grad_outputs=grad_outputs)
        return [t.detach() for t in outs], list(grads)

    return stmt, run


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_impl(case: Case, impl: Impl, inputs: Inputs, store: dict) -> dict:
    rec: dict[str, Any] = {"backend": impl.backend}
    if impl.unavailable:
        rec["skipped"] = impl.unavailable
        return rec
    timing = impl.timing or case.timing
    backend = d2l_ext.use_backend(impl.backend) if impl.backend else contextlib.nullcontext()
    leaves = [t for t in _flat_tensors(inputs) if t.requires_grad]
    with backend:
        forward = impl.factory(inputs)
        stmt, run = _make_stmt(forward, leaves, case.backward)

        _sync(case.device)
        start = time.perf_counter()
        store[impl.name] = run()  # the warm-up call; its results are checked against torch's
        _sync(case.device)
        rec["first_call_ms"] = (time.perf_counter() - start) * 1e3

        rec["saved_bytes"] = saved_for_backward_bytes(forward, inputs)
        if case.device.startswith("cuda"):
            rec["cuda_peak_bytes"], rec["cuda_allocated_before_bytes"] = cuda_peak_bytes(stmt)

        if impl.budget_s is not None and 5 * rec["first_call_ms"] / 1e3 > impl.budget_s:
            rec["skipped"] = (
                f"one call took {rec['first_call_ms'] / 1e3:.1f} s; "
                f"timing would exceed the {impl.budget_s:g} s budget"
            )
            return rec
        if case.timing.rounds > 1:  # timed in turns with the other implementations (run_case)
            rec["_turns"] = (stmt, timing)
            return rec

        timer = tbench.Timer(
            stmt="stmt()",
            globals={"stmt": stmt},
            label=case.op,
            sub_label=f"{case.pass_name} {case.shape} {case.dtype}",
            description=impl.name,
            num_threads=torch.get_num_threads(),
        )
        m = timer.adaptive_autorange(
            threshold=timing.threshold,
            min_run_time=timing.min_run_time,
            max_run_time=timing.max_run_time,
        )
    per_call = [t / m.number_per_run for t in m.raw_times]
    rec.update(
        median_ms=m.median * 1e3,
        mean_ms=m.mean * 1e3,
        iqr_ms=m.iqr * 1e3,
        blocks=len(m.raw_times),
        calls_per_block=m.number_per_run,
        block_ms=[t * 1e3 for t in per_call],
        min_run_time_s=timing.min_run_time,
        max_run_time_s=timing.max_run_time,
    )
    return rec


def run_case(case: Case) -> dict:
    """Measure every implementation of ``case``; returns its JSON record."""
    torch.manual_seed(0)
    inputs = case.make_inputs()
    record: dict[str, Any] = {
        "op": case.op,
        "pass": case.pass_name,
        "shape": case.shape,
        "params": case.params,
        "device": case.device,
        "dtype": str(case.dtype).replace("torch.", ""),
        "impls": {},
    }
    store: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for impl in case.impls:
        title = f"{case.op} {case.pass_name} {case.shape} {case.device} {record['dtype']}"
        start = time.perf_counter()
        rec = _run_impl(case, impl, inputs, store)
        _free_memory(case.device)
        rec["wall_s"] = time.perf_counter() - start
        record["impls"][impl.name] = rec
        if "_turns" in rec:
            what = "timed below, in turns with the others"
        elif "median_ms" in rec:
            what = f"{rec['median_ms']:.4g} ms median of {rec['blocks']} blocks"
        else:
            what = f"skipped ({rec.get('skipped')})"
        _log(f"  {title}: {impl.name:6s} {what}  [{rec['wall_s']:.1f} s]")

    _time_in_turns(case, record)
    reference = store.get(REFERENCE_IMPL)
    rtol = case.rtol if case.rtol is not None else _default_rtol(case.dtype)
    for name, result in store.items():
        if name == REFERENCE_IMPL or reference is None:
            continue
        check = {
            "outputs": _compare(result[0], reference[0]),
            "grads": _compare(result[1], reference[1]),
            "rtol": rtol,
        }
        check["ok"] = all(
            "error" not in c and c["max_rel_err"] <= rtol
            for c in (check["outputs"], check["grads"])
        )
        record["impls"][name]["check_vs_torch"] = check
        if not check["ok"]:
            _log(f"  WARNING: {name} differs from torch: {check}")
    del store, inputs, reference
    _free_memory(case.device)

    times = {k: v.get("median_ms") for k, v in record["impls"].items()}
    if times.get("native"):
        record["ratios"] = {
            f"{k}/native": v / times["native"]
            for k, v in times.items()
            if k != "native" and v is not None
        }
    return record


def _time_in_turns(case: Case, record: dict) -> None:
    """Time the implementations that _run_impl left for it, in ``case.timing.rounds`` turns."""
    turns = {name: rec.pop("_turns") for name, rec in record["impls"].items() if "_turns" in rec}
    if not turns:
        return
    impls = {impl.name: impl for impl in case.impls}
    blocks: dict[str, list[float]] = {name: [] for name in turns}
    rounds = case.timing.rounds
    for _ in range(rounds):
        for name, (stmt, timing) in turns.items():
            backend = impls[name].backend
            with d2l_ext.use_backend(backend) if backend else contextlib.nullcontext():
                timer = tbench.Timer(stmt="stmt()", globals={"stmt": stmt},
                                     num_threads=torch.get_num_threads())
                m = timer.blocked_autorange(min_run_time=timing.min_run_time / rounds)
            blocks[name] += [t / m.number_per_run for t in m.raw_times]
    for name, times in blocks.items():
        times.sort()
        median = statistics.median(times)
        q1, q3 = times[len(times) // 4], times[(3 * len(times)) // 4]
        record["impls"][name].update(
            median_ms=median * 1e3,
            mean_ms=sum(times) / len(times) * 1e3,
            iqr_ms=(q3 - q1) * 1e3,
            blocks=len(times),
            calls_per_block=None,
            block_ms=[t * 1e3 for t in times],
            rounds=rounds,
            min_run_time_s=timing.min_run_time,
        )
        _log(f"  {case.op} {case.pass_name} {case.shape}: {name:6s} {median * 1e3:.4g} ms median of "
             f"{len(times)} blocks in {rounds} turns")


def run_cases(cases: Iterable[Case]) -> list[dict]:
    return [run_case(c) for c in cases]


# ---------------------------------------------------------------- machine info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    wanted = ("avx", "avx2", "fma", "avx512f", "avx512bw", "amx_tile")
                    return [flag for flag in wanted if flag in have]
    except OSError:
        pass
    return []


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": _loadavg(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": _numpy_version(),
        "d2l_ext": getattr(d2l_ext, "__version__", None),
        "d2l_ext_backend": d2l_ext.backend(),
        "d2l_ext_native_available": d2l_ext.native_available(),
        "d2l_ext_has_cuda_kernels": d2l_ext.has_cuda_kernels(),
        "git_commit": _git_commit(),
        "gpu": None,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(
            gpu=props.name,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_bytes=props.total_memory,
            gpu_multiprocessors=props.multi_processor_count,
        )
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_snapshot() -> dict[str, float] | None:
    """CPU time used so far by the whole machine and by this process (Linux; else None)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    t = os.times()
    return {
        "machine_busy_s": (user + nice + system + irq + softirq + steal) / hz,
        "self_s": t.user + t.system,
        "wall_s": time.monotonic(),
    }


def others_cpu_share(start: dict | None, end: dict | None) -> float | None:
    """Fraction of all CPUs' time that other processes used between two :func:`cpu_snapshot`."""
    if not start or not end:
        return None
    wall = (end["wall_s"] - start["wall_s"]) * (os.cpu_count() or 1)
    others = (end["machine_busy_s"] - start["machine_busy_s"]) - (end["self_s"] - start["self_s"])
    return max(0.0, others / wall) if wall > 0 else None


BUSY_SHARE = 0.1  # above this share of CPU time used by others, the report warns


def _numpy_version() -> str | None:
    try:
        import numpy

        return numpy.__version__
    except ImportError:
        return None


def device_tag(device: str) -> str:
    """``cpu``, or a slug of the GPU's name (``NVIDIA H200`` -> ``nvidia-h200``)."""
    if not device.startswith("cuda"):
        return device
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cuda"


# ---------------------------------------------------------------- reports


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _fmt_bytes(v: int | None) -> str:
    if v is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v} B"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


_DTYPE_SHORT = {"float32": "fp32", "float64": "fp64", "bfloat16": "bf16", "float16": "fp16"}


def table(records: Sequence[dict]) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows, footnotes) of the results table."""
    cuda = any(r["device"].startswith("cuda") for r in records)
    shown = [n for n in IMPLS if n in CORE_IMPLS or any(n in r["impls"] for r in records)]
    headers = ["op", "pass", "shape", "device", "dtype"]
    headers += [f"{name} ms" for name in shown]
    headers += [f"{name}/native" for name in shown if name != "native"]
    headers += [f"saved {name}" for name in shown]
    if cuda:
        headers += [f"peak MB {name}" for name in shown]
    rows, notes = [], []
    for r in records:
        impls = r["impls"]
        ratios = r.get("ratios", {})
        dtype = _DTYPE_SHORT.get(r["dtype"], r["dtype"])
        row = [r["op"], r["pass"], r["shape"], r["device"], dtype]
        row += [_fmt_ms(impls.get(n, {}).get("median_ms")) for n in shown]
        row += [_fmt_ratio(ratios.get(f"{n}/native")) for n in shown if n != "native"]
        row += [_fmt_bytes(impls.get(n, {}).get("saved_bytes")) for n in shown]
        if cuda:
            peaks = [impls.get(n, {}).get("cuda_peak_bytes") for n in shown]
            row += ["-" if p is None else f"{p / 1e6:.1f}" for p in peaks]
        rows.append(row)
        for n in shown:
            rec = impls.get(n, {})
            where = f"{r['op']} {r['pass']} {r['shape']} {r['device']} {row[4]}"
            if n not in impls and n in CORE_IMPLS:
                notes.append(f"{where}: {n} - not measured for this op")
            elif "skipped" in rec:
                notes.append(f"{where}: {n} - {rec['skipped']}")
            check = rec.get("check_vs_torch")
            if check is not None and not check["ok"]:
                notes.append(f"{where}: {n} DIFFERS from torch: {check}")
    return headers, rows, notes


_LEFT = {"op", "pass", "shape", "device", "dtype"}


def format_text(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if h in _LEFT else c.rjust(w) for c, w, h in zip(cells, widths, headers)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


def format_markdown(headers: list[str], rows: list[list[str]], left: Collection[str] = _LEFT) -> str:
    """A markdown table; the columns named in ``left`` are left-aligned, the others right."""
    out = ["| " + " | ".join(headers) + " |"]
    out.append("|" + "|".join(":---" if h in left else "---:" for h in headers) + "|")
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def describe_machine(info: dict[str, Any]) -> str:
    cpu = f"{info['cpu_model']} ({info['cpu_count']} cores"
    if info.get("cpu_flags"):
        cpu += ", " + "/".join(info["cpu_flags"])
    cpu += f"; torch threads {info['torch_num_threads']}"
    cpu += ")"
    parts = [cpu]
    if info.get("gpu"):
        parts.append(f"GPU {info['gpu']} (sm {info['gpu_capability']}, CUDA {info['torch_cuda']})")
    parts.append(f"torch {info['torch']}, python {info['python']}")
    parts.append(f"d2l_ext {info['d2l_ext']} ({info['git_commit'] or 'no git'})")
    parts.append(info["date"])
    return "; ".join(parts)


NOTES = (
    "Times are medians (ms) of torch.utils.benchmark adaptive_autorange (or, where a case "
    "sets Timing.rounds, of all blocks of blocked_autorange runs taken in interleaved turns "
    "with the case's other columns); ratios > 1 mean "
    "native is faster. fwd+bwd = forward + torch.autograd.grad; fwd = forward alone with "
    "the autograd graph built. \"saved\" = bytes the forward keeps for backward (saved "
    "tensors, each storage once, the op's inputs excluded). \"peak MB\" (CUDA) = peak "
    "allocated during one call above what was allocated before it. \"-\" = not measured "
    "(see notes)."
)


def write_reports(
    op: str, device: str, records: list[dict], out_dir: Path, *, quick: bool = False,
    info: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Print the table and write ``<op>-<device-tag>[-quick].{json,md}`` to ``out_dir``.

    ``info`` is :func:`machine_info`, best taken before the run (its load average).
    """
    info = dict(info or machine_info(device))
    info["loadavg_after"] = _loadavg()
    headers, rows, notes = table(records)
    share = (extra or {}).get("others_cpu_share")
    if share is not None and share > BUSY_SHARE and device == "cpu":
        notes.insert(
            0,
            f"WARNING: other processes used {share:.0%} of the CPUs' time during this run; "
            "CPU timings are inflated and unreliable",
        )
    elif share is not None:
        notes.append(f"other processes used {share:.1%} of the CPUs' time during this run")
    text = format_text(headers, rows)
    machine = describe_machine(info)
    print(f"\n{op} on {device} - {machine}")
    print(text)
    for note in notes:
        print(f"  note: {note}")
    print(f"  {NOTES}")

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{op}-{device_tag(device)}" + ("-quick" if quick else "")
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    payload = {
        "op": op,
        "device": device,
        "device_tag": device_tag(device),
        "quick": quick,
        "machine": info,
        "notes": notes,
        "results": records,
        **(extra or {}),
    }
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    md = [f"**{op}** on `{device_tag(device)}` - {machine}", "", format_markdown(headers, rows), ""]
    md += [f"- {note}" for note in notes]
    md += [f"- {NOTES}", ""]
    md_path.write_text("\n".join(md))
    print(f"  wrote {json_path} and {md_path}")
    return json_path, md_path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", "")
    return str(obj)
