"""The `cnnlab` command. User errors are caught here once and printed as one paragraph (a traceback only
with --debug); the parser is in `parser.py`, what each command does in `commands.py`."""

from __future__ import annotations

import os
import sys

from cnnlab.cli.commands import COMMANDS, paragraph, resume_command
from cnnlab.cli.parser import build_parser
from cnnlab.errors import CnnlabError, TrainingInterrupted

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except TrainingInterrupted as error:
        print(paragraph(f"interrupted: {error}"), file=sys.stderr)
        print(f"resume with: {resume_command(error, args)}", file=sys.stderr)
        return 128 + error.signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    except CnnlabError as error:
        if args.debug:
            raise
        print(paragraph(f"error: {error}"), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader (e.g. `| head`) closed the pipe: stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        if args.debug:
            raise
        where = f" {error.filename}" if error.filename else ""
        print(paragraph(f"error: cannot read or write{where}: {error.strerror or error}. Check that it exists, "
                         "is writable and has free space, or choose another folder with --out."), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: files already written in the run directory are kept.", file=sys.stderr)
        return 130
