"""Command-line plumbing shared by the scripts: one-line errors, typed flags, switches.

`ArgumentParser` turns a bad flag into a UserError (one line, exit 2) instead of usage text;
`run_cli(main)` prints `error: <message>` for any UserError and returns 2, 130 on Ctrl-C.
Boolean flags accept `--flag`, `--no-flag` and `--flag true|false` (`add_switch`).
"""

from __future__ import annotations

import argparse
import sys

from dit.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a UserError (one line, exit 2) instead of usage text + message."""

    def error(self, message):
        script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else self.prog  # as the user typed it
        raise UserError(f"{message} (see `python {script} --help`)")


def positive(kind=int):
    """argparse type: a positive `kind` (int or float), with a one-line message otherwise."""

    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {s}")
        return v

    return parse


def typed(kind):
    """argparse type: `kind(s)` with a one-line message naming the expected type."""

    def parse(s):
        try:
            return kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {s!r}") from None

    return parse


def parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def add_switch(parser, name: str, dest: str | None = None, default=None, help: str | None = None) -> None:
    """`--name` (true), `--no-name` (false) and `--name true|false`, all into `dest`."""
    dest = dest or name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, type=parse_bool, nargs="?", const=True, default=default,
                        metavar="true|false", help=help)
    parser.add_argument(f"--no-{name}", dest=dest, action="store_false", help=argparse.SUPPRESS)


def run_cli(main, argv=None) -> int:
    """Run `main(argv)` and turn a UserError into one line on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def image_size_token(text: str) -> tuple[int, ...]:
    """One token of --image-size: "256" -> (256,), "256x384" -> (256, 384) (height x width)."""
    try:
        parts = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 256, 256x384 or two numbers H W, got {text!r}") from None
    if not 1 <= len(parts) <= 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size such as 256, 256x384 or two numbers H W, got {text!r}")
    return parts


def image_hw(tokens) -> tuple[int, int]:
    """(height, width) from --image-size's tokens (nargs="+", each `image_size_token`): H, HxW, or H W."""
    flat = [v for t in tokens for v in t]
    if len(flat) > 2 or (len(tokens) == 2 and len(flat) != 2):
        raise UserError(f"--image-size takes H, HxW or H W, got {' '.join('x'.join(map(str, t)) for t in tokens)}")
    return (flat[0], flat[-1])
