"""The ``flexharness`` command: work with suites and results outside a pytest run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flexharness.axes import AXES, check_suite, load_suite
from flexharness.errors import FlexError, SuiteError
from flexharness.results import frames, hub, merge, verdict
from flexharness.results.verdict import outputs_beside
from flexharness.results.compare import compare_lines, compare_markdown
from flexharness.results.io import read_results, unwritable, write_atomic, write_json
from flexharness.results.present import markdown, summary_lines, write_report_dir
from flexharness.rules import baseline
from flexharness.suite.reader import DEFAULT_KIND, check_max_length, expand
from flexharness.suite.spec import Suite


def _report(args: argparse.Namespace) -> int:
    """Print a results file's summary; ``--markdown`` also writes it as Markdown, ``--html`` the run's page."""

    doc = read_results(args.results)
    print("\n".join(summary_lines(doc, AXES)))
    if args.markdown:
        write_atomic(args.markdown, lambda handle: handle.write(markdown(doc, AXES)))
    if args.html:
        write_report_dir(args.html, doc, AXES)
    return 0


def _export(args: argparse.Namespace) -> int:
    """Tidy tables (Parquet or CSV) of a results file and the per-example outputs beside it."""
    if not (args.to or args.hub_yaml or args.hub_card):
        print("flexharness export: say what to write: --to DIR, --hub-yaml FILE or --hub-card FILE", file=sys.stderr)
        return 2
    if args.to:
        tables = frames.frames(args.results)
        for path in frames.write(tables, args.to, args.format):
            print(f"{path}  ({len(tables[path.stem])} rows)")
    if args.hub_yaml or args.hub_card:
        doc = read_results(args.results)
        model = hub.pick_model(doc, args.hub_model)
        for target, text in ((args.hub_yaml, hub.eval_results_yaml), (args.hub_card, hub.model_card_yaml)):
            if target:
                write_atomic(target, lambda handle, text=text: handle.write(text(doc, model)))
                print(f"{target}  ({model})")
    return 0


def _compare(args: argparse.Namespace) -> int:
    """Two results files side by side, B − A per case and per axis."""

    a, b = read_results(args.a), read_results(args.b)
    outputs = (outputs_beside([args.a]), outputs_beside([args.b]))   # per-example outputs: paired tests
    print("\n".join(compare_lines(a, b, (args.a, args.b), outputs)))
    if args.markdown:
        write_atomic(args.markdown, lambda handle: handle.write(compare_markdown(a, b, (args.a, args.b), outputs)))
    return 0


def _merge(args: argparse.Namespace) -> int:
    """Join shards into one results file; exit 1 when a recomputed gate fails, as the unsharded run would."""

    doc = verdict.merged([(path, read_results(path)) for path in args.shards], list(AXES))
    print("\n".join(summary_lines(doc, AXES)))  # first: a failed write below must not lose it
    write_json(args.output, doc)
    if args.markdown:
        write_atomic(args.markdown, lambda handle: handle.write(markdown(doc, AXES)))
    if args.report_dir:
        write_report_dir(args.report_dir, doc, AXES)
    if args.junitxml:
        merge.junit_xml(doc, args.junitxml)
    if args.save_baseline:
        write_json(args.save_baseline, baseline.make(doc))
    failed = [c for c in doc["cases"] if c["status"] != "passed"] + [g for g in doc["gates"] if not g["passed"]]
    return 1 if failed else 0


def _validate(args: argparse.Namespace) -> int:
    """Check suite files as collection would (but for what needs the model's weights); one line per file, the
    checks it could not make named, exit 1 when any is invalid."""
    from flexharness.harness.collect import check_model, claim_name
    from flexharness.engine.models import architecture

    failed, names = 0, {}
    for path in args.paths:
        try:
            suite = load_suite(Path(path))
            claim_name(names, suite)
            models = (suite.model,) if suite.model and architecture(suite.model) is not None else ()
            for model in models:
                check_model(suite, model)
            check_max_length(suite, models)
            check_suite(suite)
            items = expand(suite, (suite.model,) if suite.model else ("--model",))
        except SuiteError as exc:
            print(f"INVALID {exc}")
            failed += 1
            continue
        axes = sorted({c.axis for c in suite.cases})
        print(f"ok      {path}: suite '{suite.name}', {len(suite.cases)} cases ({', '.join(axes)}), "
              f"{len(items)} items per model")
        for case in suite.cases:
            scored = f"  -> {', '.join(case.scored_names)}" if len(case.scored_names) > 1 else ""
            direction = "higher is better" if case.higher_is_better else "lower is better"
            kind = "" if case.kind == DEFAULT_KIND else f"{case.kind}, "
            print(f"          {case.axis}/{case.name}: {case.metric} ({kind}{case.label_kind}, {direction}), "
                  f"seeds {list(case.train.seeds)}{scored}")
        print(f"          gates: {', '.join(_gate_names(suite.gates)) or 'none'}")
        print(f"          not checked: {_skipped(suite, bool(models))}")
    return 1 if failed else 0


def _skipped(suite: Suite, model_read: bool) -> str:
    """What collection checks and ``validate`` cannot: the weights (loaded only to run), and a model it cannot read."""
    weights = "anything that needs the model's weights or tokenizer (they are loaded when an item runs)"
    if model_read:
        return weights
    why = "the suite names none (pass one with --model)" if not suite.model else \
        f"model '{suite.model}' is not on this machine"
    return f"{weights}; the model's architecture (max_length, compression methods, encoder-decoder): {why}"


def _gate_names(gates: dict) -> list[str]:
    """The gates a run will report, named as in the terminal and JUnit, with their thresholds."""
    names = [f"{axis}/{stat}.{bound} {value:g}" + (f" at {bounds['confidence']:.0%} confidence"
                                                    if "confidence" in bounds else "")
             for axis in AXES.keys()
             for stat, bounds in (gates.get(axis) or {}).items() for bound, value in bounds.items()
             if bound != "confidence"]
    if "case_min" in gates:
        names.append(f"case_min {gates['case_min']:g}")
    names += [f"cases/{name}.min {floor:g}" for name, floor in (gates.get("cases") or {}).items()]
    if "regression" in gates:
        names.append("regression (with --flex-baseline)")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexharness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check suite files without running them")
    validate.add_argument("paths", nargs="+", metavar="SUITE")
    validate.set_defaults(run=_validate)
    report = commands.add_parser("report", help="print a results file's summary (and write it as Markdown)")
    report.add_argument("results", metavar="RESULTS.json")
    report.add_argument("--markdown", metavar="PATH", help="also write the summary as Markdown")
    report.add_argument("--html", metavar="DIR", help="also write the run's page: index.html, summary.md and plots")
    report.set_defaults(run=_report)
    export = commands.add_parser("export", help="write a results file as tidy tables (docs/export.md)")
    export.add_argument("results", metavar="RESULTS.json")
    export.add_argument("--to", metavar="DIR", help="the folder of the tables")
    export.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="default: parquet")
    export.add_argument("--hub-yaml", metavar="FILE", help="a model's results as a Hub .eval_results YAML file")
    export.add_argument("--hub-card", metavar="FILE", help="a model's results as model card metadata (model-index)")
    export.add_argument("--hub-model", metavar="MODEL", help="which model, when the results hold several")
    export.set_defaults(run=_export)
    compare = commands.add_parser("compare", help="two results files side by side, with deltas")
    compare.add_argument("a", metavar="A.json")
    compare.add_argument("b", metavar="B.json")
    compare.add_argument("--markdown", metavar="PATH", help="also write the comparison as Markdown")
    compare.set_defaults(run=_compare)
    merge = commands.add_parser("merge", help="join shard results into one, aggregates and gates recomputed")
    merge.add_argument("shards", nargs="+", metavar="SHARD.json")
    merge.add_argument("-o", "--output", required=True, metavar="OUT.json", help="the merged results file")
    merge.add_argument("--markdown", metavar="PATH", help="also write the merged summary as Markdown")
    merge.add_argument("--report-dir", metavar="DIR", help="also write the merged run's index.html, summary and plots")
    merge.add_argument("--junitxml", metavar="PATH", help="also write cases and gates as JUnit XML")
    merge.add_argument("--save-baseline", metavar="PATH", help="also write the merged scores as a baseline")
    merge.set_defaults(run=_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for option in OUTPUTS:  # before any reading or merging: a typo costs nothing
        target = getattr(args, option.lstrip("-").replace("-", "_"), None)
        problem = unwritable(target, folder=option in FOLDERS) if target else None
        if problem:
            print(f"flexharness {args.command}: {option}: cannot write {target}: {problem}", file=sys.stderr)
            return 2
    try:
        return args.run(args)
    except FlexError as exc:
        print(f"flexharness {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write that failed after the start-up check (disk full, folder removed)
        print(f"flexharness {args.command}: cannot write {exc.filename or ''}: {exc.strerror or exc}; "
              "the summary above was not saved there", file=sys.stderr)
        return 2


OUTPUTS = ("--output", "--markdown", "--junitxml", "--save-baseline", "--to", "--html", "--report-dir",
           "--hub-yaml", "--hub-card")  # the files and folders a command writes
FOLDERS = ("--to", "--html", "--report-dir")  # the folders among them


if __name__ == "__main__":
    sys.exit(main())
