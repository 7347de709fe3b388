"""The fuzzer of tests/fuzz_ops.py driven by hypothesis (run by tests/test_fuzz.py in a subprocess):
the same case generators, but every choice they make is a hypothesis draw, so a case whose result
differs from torch's (a FINDING) is shrunk to a minimal one and printed.

    python tests/fuzz_hypothesis.py MAX_EXAMPLES [SEED]

Without SEED the run is derandomized (the same examples every time: CI is deterministic); with
SEED, hypothesis draws from that seed. Each example is printed (flushed) before torch's function
and ours run, so a crash (segfault, abort) leaves the culprit as the last lines. Exit status 0 and
a final line "DONE <n> examples, 0 findings" when every example matched torch (or ours raised a
clean exception: a NOTE); 1 with the shrunk falsifying example(s) printed otherwise. Findings of
different ops are reported (and shrunk) separately.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_ops  # noqa: E402  (the generators, next to this file)


class DrawRng:
    """``random.Random``'s ``choice``, ``randint`` and ``random``, as hypothesis draws (which it
    shrinks: towards a list's first element, towards 0): the generators of fuzz_ops take it."""

    def __init__(self, data: st.DataObject):
        self._data = data

    def choice(self, seq):
        return self._data.draw(st.sampled_from(list(seq)))

    def randint(self, a: int, b: int) -> int:
        return self._data.draw(st.integers(a, b))

    def random(self) -> float:
        return self._data.draw(st.floats(0.0, 1.0, exclude_max=True))


_FINDING_TYPES: dict[str, type] = {}


def _finding(case: fuzz_ops.Case, message: str) -> AssertionError:
    """An AssertionError of a class per op and phase: hypothesis tells bugs apart by exception type
    and line, so findings of different ops are shrunk and reported separately."""
    op = case.name.split("(")[0]
    phase = "backward" if message.startswith("backward") else "forward"
    key = f"{op} {phase}"
    if key not in _FINDING_TYPES:
        name = "Finding_" + "".join(c if c.isalnum() else "_" for c in key)
        _FINDING_TYPES[key] = type(name, (AssertionError,), {})
    return _FINDING_TYPES[key](message)


def main(max_examples: int, seed: int | None = None) -> int:
    warnings.simplefilter("ignore")  # torch's UserWarnings (padding="same", RNN dropout, ...)
    counts = {"examples": 0}

    @settings(
        max_examples=max_examples,
        derandomize=seed is None,
        deadline=None,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                               HealthCheck.large_base_example],
    )
    @given(st.data())
    def every_op_is_torch_or_a_clean_exception(data):
        rng = DrawRng(data)
        generator = rng.choice(fuzz_ops.CASES)
        torch.manual_seed(data.draw(st.integers(0, 2**16 - 1), label="torch seed"))
        case = generator(rng)
        counts["examples"] += 1
        findings, _ = fuzz_ops.run_case(case, f"example {counts['examples']}")
        if findings:
            raise _finding(case, "; ".join(findings) + f"\n  in {case.describe()}")

    test = every_op_is_torch_or_a_clean_exception
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    try:
        test()
    except Exception as e:  # hypothesis re-raises the shrunk failure(s) after printing them
        print("FALSIFYING EXAMPLE(S): the draws and the case above each traceback", flush=True)
        traceback.print_exception(e, file=sys.stdout)
        errors = list(getattr(e, "exceptions", [e]))  # an ExceptionGroup: several distinct findings
        print(f"FAILED after {counts['examples']} examples: {len(errors)} distinct finding(s)", flush=True)
        for err in errors:
            print(f"  {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", flush=True)
        return 1
    print(f"DONE {counts['examples']} examples, 0 findings", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
