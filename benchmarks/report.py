"""Rebuild every table of benchmarks/RESULTS.md from the committed raw rows.

    python benchmarks/report.py            # rewrite the tables in RESULTS.md
    python benchmarks/report.py --check    # exit 1 (with a diff) when RESULTS.md differs from its data
    python benchmarks/report.py --check --only gflops    # only the tables of the benchmarks named

Each benchmark lives in `benchmarks/<name>/`: its script, its raw rows and its figures, and a
`tables.py` whose `tables(folder) -> {key: markdown}` renders them. RESULTS.md marks the table `key`
of benchmark `name` as `<!-- table: name/key -->` ... `<!-- /table -->` (dit/eval/tables.py). The
tables.py files are loaded by their paths and read only files in their folder.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.eval.tables import block_names, benchmark_module, fill_blocks

HERE = Path(__file__).resolve().parent


def all_tables(root: Path = HERE, only: list[str] | None = None) -> dict[str, str]:
    out = {}
    for folder in sorted(p for p in root.iterdir() if (p / "tables.py").is_file() and (not only or p.name in only)):
        for key, table in benchmark_module(folder.name, "tables", root).tables(folder).items():
            out[f"{folder.name}/{key}"] = table
    return out


def render(results: Path, root: Path = HERE, only: list[str] | None = None) -> str:
    """RESULTS.md with its tables regenerated (`only`: those of the benchmarks named; the others' stay)."""
    text = results.read_text()
    tables = all_tables(root, only)
    new, missing = fill_blocks(text, tables)
    if only:
        missing = [m for m in missing if m.partition("/")[0] in only]
    if missing:
        raise UserError(f"{results} marks tables no benchmark renders: {', '.join(missing)}")
    unused = sorted(set(tables) - set(block_names(text)))
    if unused:
        raise UserError(f"tables rendered but not placed in {results}: {', '.join(unused)} (add their markers)")
    return new


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--check", action="store_true", help="compare, write nothing; exit 1 on a difference")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only the tables of these benchmarks "
                   "(folder names under benchmarks/)")
    args = p.parse_args(argv)
    results = Path(args.results)
    if not results.is_file():
        raise UserError(f"--results {results}: no such file")
    unknown = [n for n in args.only or [] if not (HERE / n / "tables.py").is_file()]
    if unknown:
        raise UserError(f"--only {' '.join(unknown)}: no such benchmark with a tables.py under {HERE}")
    old, new = results.read_text(), render(results, only=args.only)
    if args.check:
        if old != new:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       str(results), "regenerated"))
            raise SystemExit(1)
        print(f"{results}: every table matches its raw rows")
        return
    if old != new:
        results.write_text(new)
    print(f"{results}: {len(block_names(new))} tables rebuilt")


if __name__ == "__main__":
    sys.exit(run_cli(main))
