"""`pitr`: parse the command line, run the command, turn user errors into one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pitrflow.errors import PitrError


def main(argv: list[str] | None = None) -> int:
    from pitrflow.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PitrError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["main"]
