"""Random valid and invalid calls of every op against torch's, in a subprocess (tests/fuzz_ops.py):
same result as torch or a clean Python exception; a crash (segfault, abort) fails the test with
the call that caused it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("fuzz_ops.py")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_op_is_torch_or_a_clean_exception(seed):
    result = subprocess.run([sys.executable, str(SCRIPT), str(seed), "400"], capture_output=True, text=True,
                            timeout=600)
    lines = result.stdout.splitlines()
    assert result.returncode in (0, 1), (
        f"the fuzzer died (return code {result.returncode}) at: {lines[-1] if lines else '?'}\n"
        + result.stderr[-2000:]
    )
    findings = [f"{lines[i - 1]}\n  {line}" for i, line in enumerate(lines) if line.startswith("FINDING")]
    assert not findings, "\n".join(findings)
    assert lines[-1] == "DONE 400 cases, 0 findings"
