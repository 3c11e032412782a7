"""A benchmark's raw rows and where they were measured: the one results log every benchmark keeps.

Each benchmark owns a folder `benchmarks/<name>/` with its script, its committed raw rows
(`results.jsonl`, one finished unit of work per line, appended and flushed as it finishes, so an
interrupted benchmark continues where it stopped) and its figures; per-sample scores behind an
interval go beside them as small compressed npz files. `benchmarks/report.py` rebuilds every table
of RESULTS.md from these rows.

Every row that `ResultsLog.add` writes carries its provenance: the commit (with "+dirty" when the
tree had uncommitted changes), the machine (CPU model or GPU name, threads, torch) and the command.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def commit() -> str:
    """The short commit of the repository this code runs from ("+dirty" with uncommitted changes to
    tracked code; "unknown" outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode:
        return "unknown"
    # Code only: a benchmark appending to its own results.jsonl, or prose being edited, changes no number.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "*.py", "pyproject.toml").stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    row = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}  # shared machine?
    if torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name(0)
    return row


def command(argv: list[str] | None = None) -> str:
    """The command line as it was typed (script path relative to the repository)."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        try:
            argv[0] = str(Path(argv[0]).resolve().relative_to(REPO))
        except ValueError:
            pass
    return "python " + shlex.join(argv)


def provenance() -> dict:
    return {"commit": commit(), "machine": machine(), "command": command()}


class ResultsLog:
    """results.jsonl: rows appended and flushed as each unit of work finishes; `find` matches fields."""

    def __init__(self, path: Path, quiet_keys: tuple[str, ...] = ("scores", "draws", "windows")):
        commit()  # pinned when the benchmark starts: the code that runs, not a HEAD that moves during a long run
        self.path = Path(path)
        self.quiet_keys = quiet_keys
        self.rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()] \
            if self.path.exists() else []

    def find(self, **match) -> list[dict]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]

    def add(self, provenance_fields: bool = True, **row) -> dict:
        if provenance_fields:
            row = {**row, **{k: v for k, v in provenance().items() if k not in row}}
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k not in self.quiet_keys + ("machine", "command")}),
              flush=True)
        return row


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replace `path` with `rows` (each with its provenance): for benchmarks whose rows are deterministic
    and measured whole in one run (parameter counts, closed forms). Written beside, then renamed: a
    killed run leaves the old file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    log = ResultsLog(tmp)
    for r in rows:
        log.add(**r)
    tmp.replace(path)


def existing_log(folder: Path) -> Path:
    """folder/results.jsonl for a `--report`, or one line saying to run the benchmark first."""
    from dit.errors import UserError

    path = Path(folder) / "results.jsonl"
    if not path.is_file():
        raise UserError(f"--report: {path} does not exist; run the benchmark first")
    return path


def read_rows(path: Path) -> list[dict]:
    """The rows of a committed results.jsonl (for reports, which write nothing)."""
    return ResultsLog(path).rows


def describe(rows: list[dict]) -> str:
    """'commit abc1234; AMD EPYC, 2 threads, torch 2.x' over the distinct provenance of `rows`."""
    commits = sorted({r["commit"] for r in rows if r.get("commit")})
    machines = sorted({_machine_text(r["machine"]) for r in rows if r.get("machine")})
    parts = []
    if commits:
        parts.append(("commit " if len(commits) == 1 else "commits ") + ", ".join(commits))
    if machines:
        parts.append("; ".join(machines))
    return "; ".join(parts) if parts else "provenance not recorded"


def _machine_text(m: dict) -> str:
    where = m.get("gpu") or m.get("cpu", "?")
    return f"{where}, {m.get('threads', '?')} thread(s), torch {m.get('torch', '?')}"
