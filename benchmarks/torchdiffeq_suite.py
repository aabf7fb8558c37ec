"""Run torchdiffeq's own unittest suite against a drop-in module and tabulate the subtests.

torchdiffeq's tests (``api_tests.py``, ``odeint_tests.py``, ...) ``import torchdiffeq`` and
loop over methods, dtypes and problems with ``self.subTest(...)``. This script runs each
``*_tests.py`` file and counts subtests (a test method without subtests counts as one) as
passed, failed (assertion), errors (any other exception) or skipped. With
``--against physode`` the module ``physode.torchdiffeq`` is installed as ``torchdiffeq``
first; an error it raises as ``Unsupported`` (a feature it deliberately lacks) counts as
skipped, with the reason taken from the message's text before its first colon.

The tests are not shipped with physode; get them from torchdiffeq's repository::

    git clone https://github.com/rtqichen/torchdiffeq
    python benchmarks/torchdiffeq_suite.py --tests torchdiffeq/tests
    python benchmarks/torchdiffeq_suite.py --tests torchdiffeq/tests --against torchdiffeq

They need numpy and scipy (``problems.py`` imports them). Use tests from the same version
as the reference: the tests on torchdiffeq's master use methods (``tsit5``, implicit
fixed-grid ones) that the PyPI 0.2.5 release lacks; ``PYTHONPATH=torchdiffeq`` makes
``--against torchdiffeq`` use the clone. Options: ``--files a.py b.py``
runs a subset, ``--threads N`` sets torch's thread count, ``--list-failures`` prints each
failing or erroring subtest with the first line of its error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import os
import sys
import time
import unittest
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

ExcInfo = tuple[type[BaseException], BaseException, object]
COLUMNS = ("passed", "failed", "errors", "skipped", "total")


class CountingResult(unittest.TestResult):
    """Counts subtests; a method that had subtests is counted through them only.

    An error outside the subtests of such a method (code after its loop) counts once
    more, so a drop-in's total can exceed the reference's by one per such method.
    """

    def __init__(self, unsupported: type[BaseException] | tuple[()]) -> None:
        super().__init__()
        self.unsupported = unsupported
        self.counts: Counter[str] = Counter()
        self.skip_reasons: Counter[str] = Counter()
        self.problems: list[tuple[str, str]] = []  # (test id, first line of the error)
        self._with_subtests: set[str] = set()

    def _record(self, test: unittest.TestCase, err: ExcInfo | None) -> None:
        if err is None:
            self.counts["passed"] += 1
        elif issubclass(err[0], self.unsupported):
            self._skip(str(err[1]).split(":", 1)[0].strip())
        else:
            kind = "failed" if issubclass(err[0], test.failureException) else "errors"
            self.counts[kind] += 1
            line = (f"{err[0].__name__}: {err[1]}".strip().splitlines() or [""])[0]
            self.problems.append((test.id(), line[:200]))

    def _skip(self, reason: str) -> None:
        self.counts["skipped"] += 1
        self.skip_reasons[reason] += 1

    def addSubTest(self, test, subtest, err) -> None:
        self._with_subtests.add(test.id())
        self._record(subtest, err)

    def addSuccess(self, test) -> None:
        if test.id() not in self._with_subtests:  # else its subtests were counted
            self._record(test, None)

    def addFailure(self, test, err) -> None:
        self._record(test, err)

    def addError(self, test, err) -> None:
        self._record(test, err)

    def addSkip(self, test, reason: str) -> None:
        if isinstance(test, unittest.case._SubTest):
            self._with_subtests.add(test.test_case.id())
        self._skip(reason)


class _NoInternals(importlib.abc.MetaPathFinder):
    """Makes ``import torchdiffeq.<anything>`` a clean ModuleNotFoundError."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.startswith("torchdiffeq."):
            msg = f"{fullname}: physode.torchdiffeq provides no torchdiffeq internals"
            raise ModuleNotFoundError(msg, name=fullname)


def load_target(against: str) -> ModuleType:
    """Import the module under test and, for physode, install it as ``torchdiffeq``."""
    if against == "torchdiffeq":
        return importlib.import_module("torchdiffeq")
    try:
        module = importlib.import_module("physode.torchdiffeq")
    except ModuleNotFoundError as exc:
        if exc.name not in ("physode", "physode.torchdiffeq"):
            raise
        sys.exit(f"error: physode.torchdiffeq is not available ({exc}); nothing to test")
    sys.modules["torchdiffeq"] = module
    sys.meta_path.insert(0, _NoInternals())
    return module


@contextlib.contextmanager
def in_tests_dir(tests: Path) -> Iterator[None]:
    """Tests dir on sys.path and as cwd, warnings silenced."""
    old_cwd = os.getcwd()
    sys.path.insert(0, str(tests))
    os.chdir(tests)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.chdir(old_cwd)
        sys.path.remove(str(tests))


def run_file(name: str, unsupported: type[BaseException] | tuple[()]) -> CountingResult:
    """Import one test file (fresh) and run its tests into a new CountingResult."""
    result = CountingResult(unsupported)
    module_name = Path(name).stem
    sys.modules.pop(module_name, None)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # e.g. an import the drop-in does not provide
        result.counts["errors"] += 1
        result.problems.append((name, f"import failed: {type(exc).__name__}: {exc}"[:200]))
        return result
    unittest.defaultTestLoader.loadTestsFromModule(module).run(result)
    return result


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def count_row(label: str, counts: Counter[str], seconds: float) -> list[object]:
    total = sum(counts[c] for c in COLUMNS[:-1])
    return [label, *(counts[c] for c in COLUMNS[:-1]), total, f"{seconds:.1f}"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=Path, required=True, help="torchdiffeq's tests folder")
    parser.add_argument("--against", choices=("physode", "torchdiffeq"), default="physode")
    parser.add_argument("--files", nargs="+", help="test files to run (default: *_tests.py)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads(N)")
    parser.add_argument("--list-failures", action="store_true", help="print failing subtests")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tests = args.tests.resolve()
    if not (tests / "problems.py").is_file():
        sys.exit(f"error: {tests} is not torchdiffeq's tests folder (no problems.py)")
    if args.threads:
        torch.set_num_threads(args.threads)
    module = load_target(args.against)
    unsupported = getattr(module, "Unsupported", ())
    files = [Path(f).stem + ".py" for f in args.files or []]
    files = files or sorted(p.name for p in tests.glob("*_tests.py"))

    results: dict[str, tuple[CountingResult, float]] = {}
    start = time.perf_counter()
    with in_tests_dir(tests):
        for name in files:
            t0 = time.perf_counter()
            results[name] = (run_file(name, unsupported), time.perf_counter() - t0)
            print(f"{name}: {results[name][1]:.1f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start

    where = Path(module.__file__).parent if getattr(module, "__file__", None) else "no file"
    print(
        f"torchdiffeq test suite against `{module.__name__}` ({where}): "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {wall:.1f} s wall\n"
    )
    rows = [count_row(name, res.counts, sec) for name, (res, sec) in results.items()]
    totals = sum((res.counts for res, _ in results.values()), Counter())
    rows.append(count_row("**total**", totals, wall))
    print(markdown_table(["file", *COLUMNS, "time (s)"], rows))

    reasons = [
        [name, reason, n]
        for name, (res, _) in results.items()
        for reason, n in res.skip_reasons.most_common()
    ]
    if reasons:
        print("\nSkipped, by reason:\n")
        print(markdown_table(["file", "reason", "count"], reasons))
    if args.list_failures:
        print("\nFailures and errors:\n")
        for res, _ in results.values():
            for test_id, line in res.problems:
                print(f"- {test_id}: {line}")


if __name__ == "__main__":
    main()
