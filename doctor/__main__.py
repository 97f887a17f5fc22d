"""`python -m doctor`: the readiness checklist (doctor/cli.py has the options)."""

from __future__ import annotations

import argparse
import sys

from voiceclone import dev_stack

from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m doctor", description=cli.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    dev_stack.adopt_for_command()  # settings of a running `make run` beside it, where the shell sets none
    sys.exit(main())
