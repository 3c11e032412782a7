"""User-facing errors: one clear line for the person at the terminal, no traceback.

Library code raises `UserError` for anything the user can fix (bad flag, missing file,
checkpoint that does not fit). Scripts wrap `main` in `run_cli`, which prints
`error: <message>` to stderr and exits with status 2. Programming errors still raise
normally so that bugs keep their tracebacks.
"""

import sys


class UserError(Exception):
    """An error caused by input the user controls; the message says how to fix it."""


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
