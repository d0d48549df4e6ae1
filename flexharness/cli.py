"""The ``flexharness`` command: work with suites and results outside a pytest run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flexharness.errors import SuiteError
from flexharness.suite import expand, load_suite


def _validate(args: argparse.Namespace) -> int:
    """Check suite files as collection would; one line per file, exit 1 when any is invalid."""
    failed = 0
    for path in args.paths:
        try:
            suite = load_suite(Path(path))
        except SuiteError as exc:
            print(f"INVALID {exc}")
            failed += 1
            continue
        items = expand(suite, (suite.model,) if suite.model else ("--model",))
        axes = sorted({c.axis for c in suite.cases})
        print(f"ok      {path}: suite '{suite.name}', {len(suite.cases)} cases ({', '.join(axes)}), "
              f"{len(items)} items per model")
        for case in suite.cases:
            scored = f"  -> {', '.join(case.scored_names)}" if len(case.scored_names) > 1 else ""
            direction = "higher is better" if case.higher_is_better else "lower is better"
            print(f"          {case.axis}/{case.name}: {case.metric} ({case.kind}, {direction}), "
                  f"seeds {list(case.train.seeds)}{scored}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexharness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check suite files without running them")
    validate.add_argument("paths", nargs="+", metavar="SUITE")
    validate.set_defaults(run=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
