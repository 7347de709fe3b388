"""Random valid and invalid calls of every op and module against torch's, in a subprocess: same
result as torch (values, gradients) or a clean Python exception; a crash (segfault, abort) fails the
test with the call that caused it. Two drivers of the same case generators (tests/fuzz_ops.py):
``random.Random`` seeds, and hypothesis (tests/fuzz_hypothesis.py), which shrinks a failing case."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import d2l_ext.functional as F
import d2l_ext.nn as dnn

from . import fuzz_ops

HERE = Path(__file__).parent
RANDOM_SCRIPT = HERE / "fuzz_ops.py"
HYPOTHESIS_SCRIPT = HERE / "fuzz_hypothesis.py"
HYPOTHESIS_EXAMPLES = 1000


def _run(args: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    lines = result.stdout.splitlines()
    assert result.returncode in (0, 1), (
        f"the fuzzer died (return code {result.returncode}) at:\n" + "\n".join(lines[-3:]) + "\n"
        + result.stderr[-2000:]
    )
    return result, lines


def _findings(lines: list[str]) -> list[str]:
    """Each FINDING with the case it belongs to (the last line naming one before it)."""
    out, case = [], "?"
    for line in lines:
        if line.startswith(("case ", "example ")):
            case = line
        elif line.startswith("FINDING"):
            out.append(f"{case}\n  {line}")
    return out


def test_every_public_op_and_module_is_fuzzed():
    """Every function of d2l_ext.functional and every module of d2l_ext.nn is drawn by a generator."""
    public = set(F.__all__) | set(dnn.__all__) | {"corr2d"}
    assert public - fuzz_ops.covered_names() == set()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_op_is_torch_or_a_clean_exception(seed):
    _, lines = _run([str(RANDOM_SCRIPT), str(seed), "400"])
    findings = _findings(lines)
    assert not findings, "\n".join(findings)
    assert lines[-1] == "DONE 400 cases, 0 findings"


def test_hypothesis_fuzz_is_torch_or_a_clean_exception():
    """Derandomized (the same examples on every run); a finding fails with hypothesis's shrunk example."""
    result, lines = _run([str(HYPOTHESIS_SCRIPT), str(HYPOTHESIS_EXAMPLES)])
    assert result.returncode == 0, "\n".join(lines[-60:])
    assert lines[-1] == f"DONE {HYPOTHESIS_EXAMPLES} examples, 0 findings"
