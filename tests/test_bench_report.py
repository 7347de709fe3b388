"""The benchmark summary (benchmarks/report.py) and the ``d2l-ext bench`` alias."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from d2l_ext import cli

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("matplotlib")
report = pytest.importorskip("benchmarks.report")

MACHINE = {
    "date": "2026-01-02T03:04:05+00:00", "cpu_model": "Test CPU", "cpu_flags": ["avx2"], "cpu_count": 4,
    "torch_num_threads": 4, "torch": "2.0.0", "torch_cuda": None, "python": "3.11.0",
    "d2l_ext": "0.1.0", "git_commit": "abc1234", "gpu": None,
}


def _record(op: str, shape: str, native: float | None, torch_ms: float, python: float | None,
            pass_: str = "fwd+bwd") -> dict:
    impls = {"torch": {"backend": None, "median_ms": torch_ms}}
    impls["native"] = {"backend": "native", "median_ms": native} if native else {"skipped": "x"}
    impls["python"] = {"backend": "python", "median_ms": python} if python else {"skipped": "budget"}
    return {"op": op, "pass": pass_, "shape": shape, "params": {}, "device": "cpu",
            "dtype": "float32", "impls": impls}


def _write(path: Path, op: str, records: list[dict], tag: str = "testdev") -> None:
    path.write_text(json.dumps({
        "op": op, "device": "cpu", "device_tag": tag, "quick": False, "machine": MACHINE,
        "notes": [], "results": records,
    }))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    # cross_entropy: speedups (torch/ours) 2.0 and 0.5; python 0.5 and 0.25
    _write(tmp_path / "cross_entropy-testdev.json", "cross_entropy", [
        _record("cross_entropy", "N=8 C=10", 1.0, 2.0, 4.0),
        _record("cross_entropy", "N=8 C=1000", 4.0, 2.0, 8.0, pass_="fwd"),
    ])
    # conv: speedup 8.0, python not measured
    _write(tmp_path / "conv-testdev.json", "conv", [_record("conv2d", "tiny", 1.0, 8.0, None)])
    # neither is picked up: a variant under another name, an unregistered op
    _write(tmp_path / "conv-testdev-1thread.json", "conv", [_record("conv2d", "x", 1.0, 1000.0, None)])
    _write(tmp_path / "other-testdev.json", "other", [_record("other", "x", 1.0, 1000.0, None)])
    return tmp_path


def test_summary_values(results: Path) -> None:
    assert report.device_tags(results) == ["testdev"]
    md, png = report.build_summary(results, "testdev")

    lines = md.splitlines()
    ce = "| cross_entropy | cross_entropy "
    assert ce + "| N=8 C=10 | fwd+bwd | 1.00 | 2.00 | 4.00 | 2.00x | 0.50x |" in lines
    assert ce + "| N=8 C=1000 | fwd | 4.00 | 2.00 | 8.00 | 0.50x | 0.25x |" in lines
    assert "| conv | conv2d | tiny | fwd+bwd | 1.00 | 8.00 | - | 8.00x | - |" in lines
    # geomeans: cross_entropy sqrt(2 * 0.5) = 1, python sqrt(0.5 * 0.25) = 0.354; conv 8;
    # all three cases (2 * 0.5 * 8) ** (1/3) = 2, python over the two measured 0.354;
    # benchmarks weighted equally sqrt(1 * 8) = 2.83
    assert "| cross_entropy | 2 | 1.00x | 0.35x |" in lines
    assert "| conv | 1 | 8.00x | - |" in lines
    assert "| **all cases** | 3 | **2.00x** | **0.35x** |" in lines
    assert "| benchmarks weighted equally | 2 | 2.83x | 0.35x |" in lines
    assert "Test CPU (4 cores" in md and "abc1234" in md

    summary = json.loads((results / "summary-testdev.json").read_text())
    assert summary["overall"]["native_speedup"] == pytest.approx(2.0)
    assert summary["overall"]["python_speedup"] == pytest.approx(math.sqrt(0.125))
    assert summary["geomeans"]["cross_entropy"]["native_speedup"] == pytest.approx(1.0)
    assert [r["native_speedup"] for r in summary["rows"]] == pytest.approx([2.0, 0.5, 8.0])
    assert (results / "summary-testdev.md").read_text() == md

    assert png == results / "summary-testdev.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_without_results(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        report.build_summary(tmp_path, "testdev")
    assert report.build_summaries(tmp_path) == 1


def test_bench_help_from_repo_root() -> None:
    """``d2l-ext bench --help`` from the repository root, with the root not on sys.path
    (as under the ``d2l-ext`` console script, whose sys.path starts at its bin folder)."""
    code = (
        "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
        "from d2l_ext.cli import main; sys.exit(main(['bench', '--help']))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: d2l-ext bench" in out.stdout and "--report-only" in out.stdout


def test_bench_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    assert "--device-tag" in capsys.readouterr().out


def test_bench_without_checkout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "_benchmarks_main", lambda: None)
    assert cli.main(["bench"]) == 2
    assert "source checkout" in capsys.readouterr().err
