"""Command line: `python -m reports render|compare|gate ...`.

Exit codes: 0 ok, 1 gate failure (a regression), 2 usage or data error, 3 the gate cannot
resolve (too few runs, a configuration or family missing, intermittent OOM; reports/gate.py).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from twinbench.results import ResultError, read_rows

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_render(args) -> int:
    from reports.render import render  # imports matplotlib: only this command needs it

    skipped = []

    def warn(message):
        skipped.append(message)
        _stderr(f"warning: {message}")

    rows = read_rows(args.results, on_error="skip", warn=warn)
    if not rows:
        _stderr("error: no valid result rows in " + ", ".join(args.results))
        return EXIT_ERROR
    done = render(rows, args.out, skipped=len(skipped))
    print(done.answer)
    _stderr(f"wrote {done.markdown}, {done.html} and {len(done.plots)} plot(s) to {args.out}")
    return EXIT_OK


def cmd_readme(args) -> int:
    from reports import readme

    rows = read_rows([args.results], on_error="raise")
    if not rows:
        _stderr(f"error: no result rows in {args.results}")
        return EXIT_ERROR
    source = args.source or args.results
    if not args.write:
        print(readme.readme_block(rows, source), end="")
        return EXIT_OK
    try:
        changed = readme.write(Path(args.write), rows, source)
    except ValueError as exc:
        _stderr(f"error: {args.write}: {exc}")
        return EXIT_ERROR
    _stderr(f"{args.write}: {'updated' if changed else 'already up to date'}")
    return EXIT_OK


def cmd_machines(args) -> int:
    """`machines` (and its old name `compare`, which says so): several machines side by side."""
    from reports.compare import compare_markdown, machine_results, resolve_base

    if args.command == "compare":
        _stderr("note: `python -m reports compare` is now `python -m reports machines`; "
                "the old name will go")

    machines = []
    for source in args.results:
        rows = read_rows([source], on_error="skip", warn=lambda m: _stderr(f"warning: {m}"))
        machines.append(machine_results(source, rows))
    try:
        base = resolve_base(machines, args.base)
    except ValueError as exc:
        _stderr(f"error: {exc}")
        return EXIT_ERROR
    text = compare_markdown(machines, base)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    return EXIT_OK


def cmd_gate(args) -> int:
    from reports.gate import command

    return command(args, _stderr)


def cmd_spread(args) -> int:
    from reports.spread import spread_tables
    from twinbench.results import read_rows

    tables = spread_tables(read_rows(args.results))
    if not tables:
        _stderr("error: no configuration has two or more runs there (run the benchmark tier "
                "several times, one pytest session each)")
        return EXIT_ERROR
    for title, table in tables:
        print(f"{title}\n\n{table.markdown()}\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports", description="Render, compare and gate twinbench result rows.",
        epilog="exit codes: 0 ok, 1 regression (gate), 2 usage or data error, "
               "3 gate cannot resolve")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser("render", help="write report.md, report.html and PNG plots",
                            description="Render result files/directories into a report. "
                                        "Malformed files are named on stderr and skipped.")
    render.add_argument("results", nargs="+", metavar="RESULTS", help="result files or directories")
    render.add_argument("--out", default="reports/out", help="output directory (default: %(default)s)")
    render.set_defaults(func=cmd_render)

    readme = sub.add_parser("readme", help="the README's result tables from committed rows",
                            description="Print the Markdown block of result tables generated "
                                        "from RESULTS, or with --write replace the block between "
                                        "its marker comments in that file.")
    readme.add_argument("results", metavar="RESULTS", help="a results directory (e.g. a sample)")
    readme.add_argument("--write", metavar="README", help="rewrite the block in this file")
    readme.add_argument("--source", help="how the block names RESULTS (default: as given)")
    readme.set_defaults(func=cmd_readme)

    for name in ("machines", "compare"):   # `compare` is the old name, kept as an alias
        machines = sub.add_parser(
            name, help="the same configurations on several machines" if name == "machines"
            else "old name of `machines` (deprecated)",
            description="Each argument is one machine's results (file or directory): img/s, "
                        "speed-up vs the base machine, and the within-machine TF/torch ratio.")
        machines.add_argument("results", nargs="+", metavar="RESULTS")
        machines.add_argument("--base", default="0", metavar="LABEL_OR_INDEX",
                              help="base machine: 0-based argument index, the argument itself, "
                                   "or (part of) its hardware label (default: %(default)s)")
        machines.add_argument("--out", help="also write the Markdown to this file")
        machines.set_defaults(func=cmd_machines)

    spread = sub.add_parser("spread", help="the drift between benchmark runs, and the run counts "
                                           "a gate needs at it",
                            description="Several benchmark runs of one machine (one pytest "
                                        "session each): per configuration the spread between "
                                        "runs and the current runs a gate at the device "
                                        "class's threshold needs (reports/spread.py).")
    spread.add_argument("results", nargs="+", metavar="RESULTS", help="result files or directories")
    spread.set_defaults(func=cmd_spread)

    gate = sub.add_parser("gate", help="fail (exit 1) on a throughput regression",
                          description="Compare current runs against baseline runs per "
                                      "configuration: exact Mann-Whitney on run medians, Holm "
                                      "over the configurations, a practical threshold per device "
                                      "class (reports/gate.py). Exit 0 pass, 1 regression, "
                                      "2 cannot compare, 3 cannot resolve.")
    from reports.gate import add_arguments
    add_arguments(gate)
    gate.set_defaults(func=cmd_gate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("machines", "compare") and len(args.results) < 2:
            parser.error(f"{args.command} needs at least two results, one per machine")
    except SystemExit as exc:  # argparse exits on usage errors and --help; return its code
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return args.func(args)
    except ResultError as exc:
        _stderr(f"error: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:
        # `python -m reports ... | head`: the reader left; stop quietly, as Unix tools do.
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
