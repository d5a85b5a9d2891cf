"""The ``mlip`` command line: thin sub-commands that parse, build a config and call the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

from mlip import __version__
from mlip.errors import MLIPError

__all__ = ["main", "build_parser"]

#: Sub-command modules; each defines ``register(subparsers)`` adding one or more verbs.
SUBCOMMAND_MODULES = ("demo", "data", "train", "eval", "relax", "md", "plot", "lammps",
                      "distill")


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, like every other refusal (the usage is in
    ``--help``); sub-command parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = _Parser(prog="mlip", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlip {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"mlip.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlip`` console script; returns the exit status.

    Every verb ends quietly (status 141, no traceback) when stdout is a closed pipe.
    """
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except SystemExit:  # argparse: --help, --version, usage errors
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _closed_pipe()
        raise


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (MLIPError, FileNotFoundError, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        if isinstance(exc, KeyboardInterrupt):
            print("mlip: interrupted", file=sys.stderr)
            return 130
        print(f"mlip {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _closed_pipe() -> int:
    """End quietly when the reader of stdout went away (``mlip data info S | head -1``).

    stdout is pointed at /dev/null so that the interpreter's final flush cannot raise again;
    the status is 141 (128 + SIGPIPE), as for any Unix tool cut off by a closed pipe.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout has no file descriptor (captured): nothing will be flushed to it
    finally:
        os.close(devnull)
    return 141
