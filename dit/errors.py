"""UserError: an error caused by input the user controls, whose message says how to fix it.

Library code raises it for anything the user can fix (bad flag, missing file, checkpoint that does
not fit). Scripts turn it into one line on stderr and exit status 2 (dit/cli.py); programming
errors still raise normally so that bugs keep their tracebacks.
"""


class UserError(Exception):
    """An error caused by input the user controls; the message says how to fix it."""
