"""``rs-transfer``: the command line. One module per subcommand in ``rs_transfer.commands``.

Each command module defines ``HELP`` (one line), ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports happen inside ``run`` so that ``--help`` stays fast. Bad input (:class:`UserError`) is printed as one
line naming the fix, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rs_transfer.errors import UserError

# subcommand -> module in rs_transfer.commands
COMMANDS = {
    "list": "listing",
    "inspect": "inspect",
    "weights": "weights",
    "run": "run",
    "report": "report",
    "study": "study",
    "data": "data",
    "benchmark": "benchmark",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, module in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"rs_transfer.commands.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"rs_transfer.commands.{module}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rs-transfer",
        description="Transfer-learning and video benchmarks for ResNet-RS and other ResNets: pick a backbone and a "
                    "weight source, run downstream tasks, get Table 4 / Table 5-style reports.",
        epilog="`rs-transfer COMMAND --help` explains each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, mod in _available().items():
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"rs-transfer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rs-transfer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
