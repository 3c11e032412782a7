"""benchmarks/RESULTS.md is generated: every table in it lies in a marked block that
benchmarks/report.py fills from the raw rows committed beside each benchmark, and regenerating
gives the committed file byte for byte."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dit.eval.tables import BLOCK, fill_blocks

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

@pytest.mark.slow("regenerates all 23 RESULTS.md tables, bootstrap intervals included, from their rows")
def test_results_tables_regenerate_byte_identically():
    """`python benchmarks/report.py --check`: exit 0, nothing rewritten."""
    before = RESULTS.read_bytes()
    proc = subprocess.run([sys.executable, "benchmarks/report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert RESULTS.read_bytes() == before

def test_every_table_in_results_is_generated():
    """No hand-typed table: each pipe-table line sits inside a `<!-- table: ... -->` block."""
    text = RESULTS.read_text()
    outside = BLOCK.sub("", text)
    typed = [line for line in outside.splitlines() if re.match(r"\s*\|", line)]
    assert not typed, f"hand-typed table lines in RESULTS.md: {typed[:3]}"

def test_a_changed_raw_row_changes_the_report(tmp_path):
    """The check can fail: a copy of the benchmarks with one raw number changed no longer matches (the changed
    benchmark's tables are regenerated: `--only gflops`; the full check is the test above)."""
    bench = tmp_path / "benchmarks"
    shutil.copytree(ROOT / "benchmarks", bench, ignore=shutil.ignore_patterns("runs", "cache", "*.png", "__pycache__"))
    rows = [json.loads(line) for line in (bench / "gflops" / "results.jsonl").read_text().splitlines()]
    rows[0]["params"] += 1
    (bench / "gflops" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    check = [sys.executable, str(bench / "report.py"), "--check", "--only", "gflops"]
    proc = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "+| DiT-S/2 | 32,963,361" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows[0]["params"] -= 1  # restored: the same check passes
    (bench / "gflops" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert subprocess.run(check, cwd=ROOT, capture_output=True, text=True).returncode == 0

def test_fill_blocks_refuses_nothing_silently():
    text = "a\n<!-- table: x/y -->\nold\n<!-- /table -->\nb\n<!-- table: x/z -->\n<!-- /table -->\n"
    new, missing = fill_blocks(text, {"x/y": "| new |\n"})
    assert new.startswith("a\n<!-- table: x/y -->\n| new |\n<!-- /table -->\nb") and missing == ["x/z"]

@pytest.mark.parametrize("script", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks").rglob("*.py")))
def test_benchmarks_do_not_touch_sys_path(script):
    """One layout: benchmarks/<name>/ holds its script and tables; shared pieces come from dit (installed),
    never through sys.path edits between benchmark folders."""
    assert not re.search(r"sys\.path\.(insert|append)|sys\.path\[", (ROOT / script).read_text())
