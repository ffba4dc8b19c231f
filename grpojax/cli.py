"""Command-line plumbing shared by ``scripts/*.py``: the ``UserError`` contract and argv parsing.

The contract every script follows: bad *user input* (a config key, a data row, a checkpoint
directory, a command-line argument) raises :class:`UserError`; :func:`main` turns it into ONE line
``error: <message>`` on stderr and exit status 2, with no traceback. Anything else is a bug and
propagates with its full traceback (exit status 1).

Example script::

    from grpojax import cli

    def run(argv):
        path, overrides = cli.parse_config_argv(argv, usage="train_grpo.py CONFIG.yaml [key=value ...]")
        ...

    if __name__ == "__main__":
        cli.main(run)

This module imports nothing heavy (no jax) so that argument errors are reported instantly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user: config, data file/row, checkpoint directory or command line.

    The message must say what is wrong and name the offending file / row / key so that the user can fix
    it without reading a traceback. Raised by ``grpojax.config``, ``grpojax.data``,
    ``grpojax.checkpoint``, ``grpojax.metrics`` and the sampling command line (``grpojax.sampling.cli``).
    """


def one_line(message: str) -> str:
    """Collapses a message onto one line (newlines and runs of spaces become single spaces)."""
    return " ".join(str(message).split())


def report_user_error(error: UserError) -> int:
    """Prints ``error: <message>`` (one line) on stderr after flushing stdout; returns the exit status 2."""
    sys.stdout.flush()
    print(f"error: {one_line(str(error))}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def main(fn: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> None:
    """Runs ``fn(argv)`` as a script body and exits.

    Exit status: ``fn``'s return value (``None`` -> 0); 2 with one line ``error: ...`` on stderr when
    ``fn`` raises :class:`UserError`; 130 on KeyboardInterrupt (one line, no traceback). Every other
    exception propagates unchanged (Python prints the traceback and exits 1).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = fn(args)
    except UserError as e:
        sys.exit(report_user_error(e))
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("error: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(0 if status is None else int(status))


def parse_config_argv(argv: Sequence[str], usage: str) -> tuple[str, list[str]]:
    """Splits ``CONFIG.yaml key=value ...`` into the config path and the list of overrides.

    Raises:
      UserError: no config path, a second positional argument, an override without ``=`` or an empty key,
        or an unknown ``--flag``. ``-h``/``--help`` prints ``usage`` and exits 0.
    """
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(f"usage: {usage}")
        sys.exit(0)
    if not args:
        raise UserError(f"missing config file; usage: {usage}")
    path, rest = args[0], args[1:]
    if path.startswith("-") or "=" in path:
        raise UserError(f"the first argument must be a config file, got {path!r}; usage: {usage}")
    for item in rest:
        if item.startswith("--"):
            raise UserError(f"unknown option {item!r}; overrides are written key=value; usage: {usage}")
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad override {item!r}: expected key=value (e.g. train.steps=10); usage: {usage}")
    return path, rest
