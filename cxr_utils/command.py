"""One style for the package's eight command lines (``python -m cxr_utils.X`` for X in run, study,
data, training_cli, predict, external, model_card, publish): argparse parses; ``--help`` ends with
the command's exit statuses; every error is one line on stderr; the statuses mean the same
everywhere (0 done, 1 done in part or failed while running, 2 bad arguments or input, nothing
done; 130 interrupted).
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_FAILED = 1  # ran, but not everything could be done (what could not is listed)
EXIT_USAGE = 2  # argparse's own status for a bad argument; bad input files and folders too
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it


class Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line usage error (the usage itself stays behind --help)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parser(module: str, description: str, exits: str, **options) -> Parser:
    """The parser of ``python -m {module}``: ``description`` says what it does, ``exits`` what its
    exit statuses mean (shown at the end of --help)."""
    return Parser(prog=f"python -m {module}", description=description, epilog=f"Exit status: {exits}",
                  **options)


def fail(message, status: int = EXIT_USAGE) -> int:
    """Print ``message`` on stderr as one line, "error: ..."; returns ``status`` for main to return."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return status
