"""User-facing errors: one clear line for the person at the terminal, no traceback.

Library code raises `UserError` for anything the user can fix (bad flag, missing file,
checkpoint that does not fit). Scripts wrap `main` in `run_cli`, which prints
`error: <message>` to stderr and exits with status 2. Programming errors still raise
normally so that bugs keep their tracebacks.
"""

import argparse
import sys


class UserError(Exception):
    """An error caused by input the user controls; the message says how to fix it."""


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
