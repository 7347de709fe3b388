"""One summary of every op benchmark on one device: markdown, JSON and a bar chart.

:func:`build_summary` reads ``<results>/<op>-<device-tag>.json`` of every
registered op (:data:`benchmarks.OPS`) that has one (``<op>-<tag>-quick.json``
with ``quick=True``) and writes ``summary-<tag>[-quick].{md,json,png}`` next to
them:

- the machines the files were measured on (CPU, GPU, threads, torch, date, git
  commit, per file);
- one table of every case: d2l_ext native, torch and Python-fallback medians
  and the speedups over torch (``torch ms / implementation ms``: > 1 means
  faster than torch's native op);
- the geometric mean of the speedups per benchmark and over all cases;
- a horizontal bar chart of the speedups (log scale, torch = 1).

Variants saved under other names (``conv-cpu-1thread.json``) are not picked up
when looking for device tags; ``--device-tag cpu-1thread`` summarises them.

``python -m benchmarks --report-only [--device-tag TAG] [--quick]`` runs it
without timing anything.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import OPS
from .common import _DTYPE_SHORT, _fmt_ms, _fmt_ratio, describe_machine, format_markdown

# the implementations the summary compares with torch, and their titles
COMPARED = ("native", "python")
TITLES = {"native": "d2l_ext native", "python": "python fallback"}
COLORS = {"native": "#1f77b4", "python": "#ff7f0e"}


def _suffix(quick: bool) -> str:
    return "-quick" if quick else ""


def geomean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of the positive values given (None: none given)."""
    logs = [math.log(v) for v in values if v is not None and v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


def device_tags(results_dir: Path, quick: bool = False) -> list[str]:
    """Device tags with at least one ``<op>-<tag>[-quick].json`` of a registered op.

    Only files named after the tag recorded inside them count, so variants
    saved under another name (``conv-cpu-1thread.json``) are left out.
    """
    tags: set[str] = set()
    for op in OPS:
        for path in Path(results_dir).glob(f"{op}-*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            tag = data.get("device_tag") if isinstance(data, dict) else None
            if tag and path.name == f"{op}-{tag}{_suffix(quick)}.json" and data.get("op") == op:
                tags.add(tag)
    return sorted(tags)


def load_results(results_dir: Path, device_tag: str, quick: bool = False) -> list[dict]:
    """The result files of every registered op on ``device_tag``, in :data:`OPS` order."""
    files = []
    for op in OPS:
        path = Path(results_dir) / f"{op}-{device_tag}{_suffix(quick)}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if data.get("results"):
            data["_path"] = path
            files.append(data)
    return files


def _speedup(torch_ms: float | None, ms: float | None) -> float | None:
    return torch_ms / ms if torch_ms and ms else None


def _case_label(record: dict) -> str:
    label = record["shape"]
    dtype = record.get("dtype", "float32")
    if dtype != "float32":
        label += f" {_DTYPE_SHORT.get(dtype, dtype)}"
    return label


def summary_rows(files: Sequence[dict]) -> list[dict]:
    """One row per case: medians (ms) and speedups over torch (None where not measured)."""
    rows = []
    for data in files:
        for rec in data["results"]:
            impls = rec.get("impls", {})
            ms = {name: impls.get(name, {}).get("median_ms") for name in ("native", "torch", "python")}
            failed = [
                name for name, impl in impls.items()
                if impl.get("check_vs_torch") is not None and not impl["check_vs_torch"].get("ok", True)
            ]
            rows.append({
                "benchmark": data["op"],
                "op": rec["op"],
                "case": _case_label(rec),
                "pass": rec["pass"],
                "dtype": rec.get("dtype"),
                "native_ms": ms["native"],
                "torch_ms": ms["torch"],
                "python_ms": ms["python"],
                "native_speedup": _speedup(ms["torch"], ms["native"]),
                "python_speedup": _speedup(ms["torch"], ms["python"]),
                "differs_from_torch": failed,
            })
    return rows


def _geomeans(rows: Sequence[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"cases": len(rows)}
    for name in COMPARED:
        values = [r[f"{name}_speedup"] for r in rows if r[f"{name}_speedup"] is not None]
        out[f"{name}_speedup"] = geomean(values)
        out[f"{name}_cases"] = len(values)
    return out


def summary_geomeans(rows: Sequence[dict]) -> tuple[dict[str, dict], dict[str, Any]]:
    """(per benchmark, overall) geometric means of the speedups over torch.

    ``overall`` is over every case; ``overall["per_benchmark_equal"]`` weighs
    each benchmark's geomean equally (conv has many more cases than models).
    """
    per: dict[str, dict] = {}
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        per[bench] = _geomeans([r for r in rows if r["benchmark"] == bench])
    overall = _geomeans(rows)
    overall["per_benchmark_equal"] = {
        f"{name}_speedup": geomean(g[f"{name}_speedup"] for g in per.values()) for name in COMPARED
    }
    return per, overall


def _distinct(files: Sequence[dict], key: str) -> list[Any]:
    return list(dict.fromkeys(str(f["machine"].get(key)) for f in files if f["machine"].get(key) is not None))


def machine_headline(files: Sequence[dict]) -> str:
    """One line naming the machine(s) the files were measured on."""
    if not files:
        return "no results"
    machines = [f["machine"] for f in files]
    first = machines[0]
    same = all(
        m.get(k) == first.get(k)
        for m in machines
        for k in ("cpu_model", "cpu_count", "gpu", "torch", "torch_num_threads", "python")
    )
    if same:  # the shared part of describe_machine: everything but commit and date
        return describe_machine(first).rsplit("; d2l_ext ", 1)[0]
    parts = [f"CPU {' / '.join(_distinct(files, 'cpu_model'))}"]
    gpus = _distinct(files, "gpu")
    if gpus:
        parts.append(f"GPU {' / '.join(gpus)}")
    parts.append(f"torch threads {' / '.join(_distinct(files, 'torch_num_threads'))}")
    parts.append(f"torch {' / '.join(_distinct(files, 'torch'))}")
    return "; ".join(parts) + " (differs between files, see below)"


def _speed(v: float | None) -> str:
    return _fmt_ratio(v)


def summary_markdown(
    files: Sequence[dict], rows: Sequence[dict], per: dict[str, dict], overall: dict[str, Any],
    device_tag: str, quick: bool = False, png_name: str | None = None,
) -> str:
    title = f"# d2l_ext benchmarks on `{device_tag}`" + (" (quick smoke run)" if quick else "")
    md = [title, "", f"Measured on: {machine_headline(files)}.", ""]

    headers = ["benchmark", "date (UTC)", "git commit", "CPU", "threads", "GPU", "torch", "cases"]
    table = []
    for f in files:
        m = f["machine"]
        table.append([
            f["op"], str(m.get("date", "-")).replace("+00:00", ""), m.get("git_commit") or "-",
            f"{m.get('cpu_model', '-')} ({m.get('cpu_count', '?')} cores)",
            str(m.get("torch_num_threads", "-")), m.get("gpu") or "-", m.get("torch", "-"),
            str(len(f["results"])),
        ])
    md += [format_markdown(headers, table, _LEFT), ""]
    warnings = [f"- {f['op']}: {note}" for f in files for note in f.get("notes", [])
                if str(note).startswith("WARNING")]
    if warnings:
        md += [*warnings, ""]

    md += [
        "Times are the medians (ms) in each benchmark's JSON; speedup = torch ms / implementation ms "
        "(> 1: faster than torch's native op, < 1: slower). \"-\" = not measured.",
        "",
    ]
    headers = ["benchmark", "op", "case", "pass", "ours ms", "torch ms", "python ms",
               "ours speedup", "python speedup"]
    table = []
    for r in rows:
        flag = " (!)" if r["differs_from_torch"] else ""
        table.append([
            r["benchmark"], r["op"], r["case"] + flag, r["pass"],
            _fmt_ms(r["native_ms"]), _fmt_ms(r["torch_ms"]), _fmt_ms(r["python_ms"]),
            _speed(r["native_speedup"]), _speed(r["python_speedup"]),
        ])
    md += [format_markdown(headers, table, _LEFT), ""]
    flagged = [r for r in rows if r["differs_from_torch"]]
    if flagged:
        md += [
            f"(!) {', '.join(sorted({n for r in flagged for n in r['differs_from_torch']}))} output "
            "differs from torch's beyond the tolerance in that case (see the benchmark's JSON).",
            "",
        ]

    md += ["## Geometric means of the speedup over torch", ""]
    headers = ["benchmark", "cases", "ours speedup", "python speedup"]
    table = [[b, str(g["cases"]), _speed(g["native_speedup"]), _speed(g["python_speedup"])]
             for b, g in per.items()]
    eq = overall["per_benchmark_equal"]
    table.append(["**all cases**", str(overall["cases"]),
                  f"**{_speed(overall['native_speedup'])}**", f"**{_speed(overall['python_speedup'])}**"])
    table.append(["benchmarks weighted equally", str(len(per)),
                  _speed(eq["native_speedup"]), _speed(eq["python_speedup"])])
    md += [format_markdown(headers, table, _LEFT), ""]
    md += [
        f"Overall: d2l_ext native runs at {_speed(overall['native_speedup'])} torch's speed and the "
        f"Python fallback at {_speed(overall['python_speedup'])} (geometric mean over "
        f"{overall['cases']} cases on `{device_tag}`).",
        "",
    ]
    if png_name:
        md += [f"![speedup over torch on {device_tag}]({png_name})", ""]
    return "\n".join(md)


_LEFT = {"benchmark", "op", "case", "pass", "date (UTC)", "git commit", "CPU", "GPU", "torch"}


def _plot(
    rows: Sequence[dict], per: dict[str, dict], overall: dict[str, Any], path: Path, title: str
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        print("benchmarks.report: matplotlib is not installed; no chart written")
        return None

    # one slot per benchmark header, one per case; top to bottom in table order
    slots: list[tuple[str, Any]] = []
    for bench, g in per.items():
        slots.append(("header", (bench, g)))
        slots += [("case", r) for r in rows if r["benchmark"] == bench]
    n = len(slots)
    y = {i: n - 1 - i for i in range(n)}
    values = [r[f"{k}_speedup"] for r in rows for k in COMPARED if r[f"{k}_speedup"]]
    lo = min([*values, 1.0]) / 2.2
    hi = max([*values, 1.0]) * 2.2

    fig, ax = plt.subplots(figsize=(11, 1.8 + 0.26 * n), layout="constrained")
    bar_h = 0.38
    labels, bold = [], []
    shade = False
    for i, (kind, item) in enumerate(slots):
        if kind == "header":
            bench, g = item
            ours, python = _speed(g["native_speedup"]), _speed(g["python_speedup"])
            labels.append(f"{bench}  (geomean: ours {ours}, python {python})")
            bold.append(True)
            shade = not shade
            end = next((j for j in range(i + 1, n) if slots[j][0] == "header"), n)
            if shade:
                ax.axhspan(y[end - 1] - 0.5, y[i] + 0.5, color="0.94", zorder=0)
            continue
        r = item
        labels.append(f"{r['op']} {r['pass']}  {r['case']}")
        bold.append(False)
        for k, offset in (("native", bar_h / 2), ("python", -bar_h / 2)):
            v = r[f"{k}_speedup"]
            if v is None:
                continue
            # bars grow from torch's 1x: right = faster than torch, left = slower
            ax.barh(y[i] + offset, v - 1.0, height=bar_h, left=1.0, color=COLORS[k], zorder=2)
            right = v >= 1.0
            ax.text(v * (1.04 if right else 1 / 1.04), y[i] + offset, f"{v:.2f}x", va="center",
                    ha="left" if right else "right", fontsize=6.5, zorder=3)

    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.7, n + 0.6)  # the slot above the first header holds the legend
    ax.axvline(1.0, color="black", linewidth=1.2, zorder=3)
    ax.set_yticks([y[i] for i in range(n)])
    ax.set_yticklabels(labels, fontsize=7.5)
    for tick, is_bold in zip(ax.get_yticklabels(), bold):
        if is_bold:
            tick.set_fontweight("bold")
            tick.set_fontsize(8.5)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", which="major", color="0.8", linewidth=0.6, zorder=1)
    ax.set_xlabel("speedup over torch's native op (torch ms / implementation ms; log scale; > 1 = faster)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    overall_line = (
        f"overall geomean over {overall['cases']} cases: ours {_speed(overall['native_speedup'])}, "
        f"python fallback {_speed(overall['python_speedup'])}  (torch = 1x)"
    )
    fig.suptitle("\n".join([*textwrap.wrap(title, 140), overall_line]), fontsize=10)
    handles = [Patch(color=COLORS[k], label=TITLES[k]) for k in COMPARED]
    ax.legend(handles=handles, loc="upper right", ncol=2, fontsize=8, framealpha=0.95,
              borderaxespad=0.3)
    _save_small_png(fig, path)
    plt.close(fig)
    return path


def _save_small_png(fig: Any, path: Path, dpi: int = 100) -> None:
    """Save ``fig`` as a palette PNG (a chart has few colours: a fraction of the RGBA size)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    try:
        from PIL import Image  # matplotlib depends on Pillow
    except ImportError:
        path.write_bytes(buf.getvalue())
        return
    buf.seek(0)
    with Image.open(buf) as img:
        img.convert("RGB").quantize(colors=128).save(path, format="PNG", optimize=True)


def build_summary(
    results_dir: Path | str, device_tag: str, quick: bool = False
) -> tuple[str, Path | None]:
    """Write ``summary-<tag>[-quick].{md,json,png}`` into ``results_dir``.

    Returns (the markdown, the PNG's path; None when matplotlib is missing).
    Raises FileNotFoundError when no registered op has a result file for the tag.
    """
    results_dir = Path(results_dir)
    files = load_results(results_dir, device_tag, quick)
    if not files:
        raise FileNotFoundError(
            f"no {'quick ' if quick else ''}results for device tag {device_tag!r} in {results_dir} "
            f"(expected <op>-{device_tag}{_suffix(quick)}.json for an op of {', '.join(OPS)})"
        )
    rows = summary_rows(files)
    per, overall = summary_geomeans(rows)
    stem = f"summary-{device_tag}{_suffix(quick)}"
    headline = machine_headline(files)
    png = _plot(rows, per, overall, results_dir / f"{stem}.png",
                f"d2l_ext vs torch on {device_tag} - {headline}")
    markdown = summary_markdown(files, rows, per, overall, device_tag, quick,
                                png.name if png else None)
    (results_dir / f"{stem}.md").write_text(markdown)
    payload = {
        "device_tag": device_tag,
        "quick": quick,
        "machine": headline,
        "files": {
            f["op"]: {"path": f["_path"].name, "machine": f["machine"], "notes": f.get("notes", [])}
            for f in files
        },
        "speedup": "torch median ms / implementation median ms (> 1: faster than torch)",
        "rows": rows,
        "geomeans": per,
        "overall": overall,
    }
    (results_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {results_dir / stem}.md, .json" + (", .png" if png else ""))
    return markdown, png


def build_summaries(results_dir: Path | str, tags: Sequence[str] | None = None, quick: bool = False) -> int:
    """:func:`build_summary` for ``tags`` (default: every tag with results); 0 on success."""
    tags = list(tags) if tags else device_tags(Path(results_dir), quick)
    if not tags:
        print(f"no {'quick ' if quick else ''}benchmark results in {results_dir}")
        return 1
    status = 0
    for tag in tags:
        try:
            build_summary(results_dir, tag, quick)
        except FileNotFoundError as err:
            print(err)
            status = 1
    return status
