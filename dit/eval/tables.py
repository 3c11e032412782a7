"""Markdown tables and figures for benchmark reports: every table in benchmarks/RESULTS.md is
rendered by these from committed raw rows (benchmarks/report.py), never typed by hand.

RESULTS.md marks each generated table with a pair of comments,

    <!-- table: time_to_quality/main -->
    | ... |
    <!-- /table -->

and `fill_blocks` replaces what lies between them; everything outside the markers is prose.
"""

from __future__ import annotations

import re
from pathlib import Path

BLOCK = re.compile(r"(<!-- table: (?P<name>[\w./-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A pipe table; `align` is one letter per column, 'l' or 'r' (default: all left)."""
    align = align or "l" * len(header)
    if len(align) != len(header) or any(len(r) != len(header) for r in rows):
        raise ValueError("markdown_table: every row and the alignment need one entry per column")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def block_names(text: str) -> list[str]:
    return [m.group("name") for m in BLOCK.finditer(text)]


def fill_blocks(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """`text` with every marked block replaced by its table; also the names of blocks no table fills."""
    missing = []

    def sub(m):
        name = m.group("name")
        if name not in tables:
            missing.append(name)
            return m.group(0)
        return m.group(1) + tables[name] + m.group(4)

    return BLOCK.sub(sub, text), missing


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure without the metadata that changes from run to run."""
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)


def new_figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark_module(name: str, stem: str | None = None, root: Path = BENCHMARKS):
    """benchmarks/<name>/<stem>.py (stem defaults to the benchmark's script, <name>.py) as a module,
    loaded by its path under a name of its own (`benchmarks.<name>.<stem>`), so that every benchmark's
    `tables.py` can be loaded side by side without touching sys.path."""
    import importlib.util
    import sys

    stem = stem or name
    key = f"benchmarks.{name}.{stem}"
    if key not in sys.modules:
        path = root / name / f"{stem}.py"
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
