"""The shell commands of README.md and docs/*.md do not go stale.

For every command line in a fenced code block (and every inline `python ...` span) that runs
`python SCRIPT`, `.venv/bin/python SCRIPT`, `accelerate launch ... SCRIPT`, `VAR=... python SCRIPT` or
`make TARGET`:
  1. the script (and any repo file the command names) exists;
  2. every `--flag` is one the script accepts, read from its own `--help` (one helper process runs
     every script's `--help`, so torch is imported once), and a training preset is one it knows;
  3. a test or a benchmark uses the script with each of those flags: every flag appears in some
     tests/ or benchmarks/ source that names the script, unless ALLOWED says why not.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from typing import NamedTuple

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Scripts whose unknown flags go on to another script's parser.
PASS_THROUGH = {"evaluate.py": "sample.py"}  # evaluate.py --ckpt: "other flags as in sample.py"

# Documented (script, flag) pairs that no test or benchmark source uses with that script, each with why.
ALLOWED = {
    ("evaluate.py", "--i3d-sha256"): "FVD needs the real Kinetics-400 I3D weights, which no test or benchmark has",
    ("train_classifier.py", "--data"): "train.py's flags (one parser, dit/training/flags.py), tested via train.py",
    ("benchmarks/gflops/gflops.py", "--arch"): "recorded in RESULTS.md; tests count DiffuSSM's cost, not via the flag",
    ("benchmarks/diffusers_export/diffusers_export.py", "--ckpt"): "the benchmark's own recorded run (RESULTS.md); no test runs it",
    ("benchmarks/diffusers_export/diffusers_export.py", "--out"): "the benchmark's own recorded run (RESULTS.md); no test runs it",
}

# Sources that do not count as using a script: this file, and the bad-input test, which names every
# script in one list and feeds them wrong flags on purpose.
NOT_EXERCISING = {"tests/test_docs.py", "tests/test_cli_errors.py"}

# Repo paths a command may name as inputs (anything else is an output or the reader's own data).
REPO_DIRS = ("tests/", "benchmarks/", "dit/", "models/", "docs/")

HELP_HARNESS = r"""
import contextlib, io, json, runpy, sys
root, scripts = sys.argv[1], sys.argv[2:]
out = {}
for script in scripts:
    path = f"{root}/{script}"
    sys.argv = [path, "--help"]
    sys.path[:1] = [path.rsplit("/", 1)[0]]  # as `python SCRIPT` puts the script's folder first
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            runpy.run_path(path, run_name="__main__")
        out[script] = {"error": "--help did not exit"}
    except SystemExit as e:
        out[script] = {"help": buf.getvalue()} if e.code in (0, None) else {"error": buf.getvalue()[-2000:]}
    except BaseException as e:
        out[script] = {"error": f"{type(e).__name__}: {e}\n{buf.getvalue()[-2000:]}"}
from accelerate.commands.launch import launch_command_parser
out["accelerate launch"] = {"help": launch_command_parser().format_help()}
print(json.dumps(out))
"""


def _code_lines(text):
    """Command lines of fenced code blocks (continuations joined) and inline `python ...` spans."""
    lines, in_code = [], False
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            in_code = not in_code
            if not in_code:
                continue
            lang = raw.strip()[3:]
            if lang not in ("", "bash", "sh", "shell", "console"):
                in_code = "skip"
            continue
        if in_code == "skip":
            continue
        if in_code:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + raw.strip()
            else:
                lines.append(raw.strip())
        else:
            lines += [s for s in re.findall(r"`([^`]+)`", raw)
                      if re.match(r"(\.venv/bin/)?python \S+\.py\b|accelerate launch ", s)]
    return lines


class Command(NamedTuple):
    env: dict  # VAR=value prefixes
    runner: str  # "python", "accelerate" or "make"
    script: str | None  # the .py file it runs (None for make)
    args: list  # the script's arguments (make: the targets)
    launcher_args: list  # accelerate launch's own arguments


def _parse(line):
    """The Command of a documented line, or None when it runs none of ours."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        key, _, value = tokens.pop(0).partition("=")
        env[key] = value
    if not tokens:
        return None
    if tokens[0] == "make":
        return Command(env, "make", None, tokens[1:], [])
    if tokens[:2] == ["accelerate", "launch"]:
        i = next((i for i, t in enumerate(tokens) if t.endswith(".py")), len(tokens))
        return Command(env, "accelerate", tokens[i] if i < len(tokens) else None, tokens[i + 1:], tokens[2:i])
    if tokens[0] in ("python", "python3", ".venv/bin/python") and len(tokens) > 1 and tokens[1].endswith(".py"):
        return Command(env, "python", tokens[1], tokens[2:], [])
    return None


def documented_commands():
    cmds = []
    for doc in DOCS:
        for line in _code_lines(doc.read_text()):
            parsed = _parse(line)
            if parsed is not None:
                cmds.append((doc.relative_to(ROOT).as_posix(), line, parsed))
    return cmds


COMMANDS = documented_commands()


def _flags(args):
    return [a.split("=", 1)[0] for a in args if re.fullmatch(r"--[A-Za-z][\w-]*(=.*)?", a)]


@lru_cache(maxsize=None)
def helps():
    """Every documented script's --help text (or the error it died with), from one process."""
    scripts = sorted({cmd.script for _, _, cmd in COMMANDS if cmd.script} | set(PASS_THROUGH.values()))
    scripts = [s for s in scripts if (ROOT / s).is_file()]
    r = subprocess.run([sys.executable, "-c", HELP_HARNESS, str(ROOT), *scripts], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def accepted(script):
    """The flags `script --help` lists; `--no-X` for every switch `--X [true|false]`."""
    entry = helps()[script]
    assert "help" in entry, f"`python {script} --help` failed:\n{entry['error']}"
    text = entry["help"]
    flags = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", text))
    flags |= {f"--no-{m}" for m in re.findall(r"--([\w-]+) \[true\|false\]", text)}
    if script in PASS_THROUGH:
        flags |= accepted(PASS_THROUGH[script])
    return flags


def presets(script):
    m = re.search(r"presets: (.*?) \(default", helps()[script].get("help", ""), re.S)
    return None if m is None else {p.strip() for p in m.group(1).split(",")}


def _mentions(source, script):
    stem = re.escape(script.rsplit("/", 1)[-1][:-3])
    return re.search(rf"(?<![\w.-]){stem}\.py\b|^\s*(?:import|from)\s+(?:benchmarks\.)?{stem}\b"
                     rf"|^\s*from\s+benchmarks\s+import\s+{stem}\b|benchmark_module\(\"{stem}\"\)", source,
                     re.M) is not None


@lru_cache(maxsize=None)
def _sources():
    files = [*sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py"))]
    texts = {f.relative_to(ROOT).as_posix(): f.read_text() for f in files}
    return {name: text for name, text in texts.items() if name not in NOT_EXERCISING}


@lru_cache(maxsize=None)
def exercised(script):
    """Flags used in a tests/ or benchmarks/ source that names `script` (the script's own file excluded;
    a benchmark's own add_argument definitions do not count as using a flag)."""
    used = set()
    for name, source in _sources().items():
        if name == script or not _mentions(source, script):
            continue
        every = re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", source)
        defined = re.findall(r"add_argument\(\s*[\"'](--[A-Za-z][\w-]*)", source)
        used |= {f for f in set(every) if every.count(f) > defined.count(f)}
    return used


IDS = [f"{doc}:{line[:70]}" for doc, line, _ in COMMANDS]


def test_docs_have_commands():
    docs = {doc for doc, _, _ in COMMANDS}
    assert "README.md" in docs and len(docs) >= 10 and len(COMMANDS) >= 40, docs


@pytest.mark.parametrize("doc,line,cmd", COMMANDS, ids=IDS)
def test_command_names_files_that_exist(doc, line, cmd):
    env, runner, script, args = cmd.env, cmd.runner, cmd.script, cmd.args
    if runner == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        assert set(args) <= targets, f"{doc}: `{line}`: no make target {set(args) - targets}"
        return
    assert script and (ROOT / script).is_file(), f"{doc}: `{line}`: no script {script}"
    for value in [*env.values(), *args]:
        for path in value.split(":"):
            if path.startswith(REPO_DIRS) or (path.endswith(".py") and "/" in path):
                assert (ROOT / path).exists(), f"{doc}: `{line}`: {path} does not exist"


@pytest.mark.parametrize("doc,line,cmd", COMMANDS, ids=IDS)
def test_command_flags_are_accepted(doc, line, cmd):
    runner, script, args = cmd.runner, cmd.script, cmd.args
    if runner == "accelerate":
        unknown = set(_flags(cmd.launcher_args)) - accepted("accelerate launch")
        assert not unknown, f"{doc}: `{line}`: accelerate launch does not take {sorted(unknown)}"
    if script is None:
        return
    unknown = set(_flags(args)) - accepted(script)
    assert not unknown, f"{doc}: `{line}`: {script} does not take {sorted(unknown)}"
    known = presets(script)
    if known is not None and args and not args[0].startswith("-"):
        assert args[0] in known, f"{doc}: `{line}`: {script} has no preset {args[0]!r} ({sorted(known)})"


@pytest.mark.parametrize("doc,line,cmd", COMMANDS, ids=IDS)
def test_command_is_exercised_by_a_test_or_benchmark(doc, line, cmd):
    script, args = cmd.script, cmd.args
    if script is None:
        return
    untested = {f for f in _flags(args) if f not in exercised(script) and (script, f) not in ALLOWED}
    assert not untested, (f"{doc}: `{line}`: no test or benchmark uses {script} with {sorted(untested)}; "
                          "copy the command from one, or add it to ALLOWED with the reason")


def test_allow_list_names_documented_flags():
    # Only entries the docs no longer use are stale: exercised() matches by file, so a new test naming
    # the script beside the flag does not prove the flag is run with it.
    documented = {(cmd.script, f) for _, _, cmd in COMMANDS if cmd.script for f in _flags(cmd.args)}
    stale = {k for k in ALLOWED if k not in documented}
    assert not stale, f"ALLOWED entries no command in the docs uses: {sorted(stale)}"


def _slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+://|#", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve()
        assert file.exists(), f"{doc.name}: link to {target}: no {path}"
        if anchor and file.suffix == ".md":
            slugs = {_slug(h) for h in re.findall(r"^#+ (.*)$", file.read_text(), re.M)}
            assert anchor in slugs, f"{doc.name}: link to {target}: no heading #{anchor} in {path}"
