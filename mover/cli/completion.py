"""``mover completion SHELL``: the shell completion script, generated from the parser."""

from __future__ import annotations

import argparse

from mover.cli.runner import Commands

EXAMPLE = """example:
  mover completion bash | sudo tee /etc/bash_completion.d/mover
  mover completion zsh > "${fpath[1]}/_mover"
"""


def declare(sub: Commands, common: argparse.ArgumentParser,
            top: argparse.ArgumentParser) -> argparse.ArgumentParser:
    c = sub.add_parser("completion", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="print a shell completion script (bash, zsh or tcsh)")
    c.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    c.set_defaults(run=run, json=False, top=top)
    return c


def run(args: argparse.Namespace) -> int:
    import shtab  # here: only this command needs it

    print(shtab.complete(args.top, shell=args.shell))
    return 0
