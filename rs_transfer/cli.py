"""``rs-transfer``: the command line. One module per subcommand in ``rs_transfer.commands``.

Each command module defines ``HELP`` (one line), ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports happen inside ``run`` so that ``--help`` stays fast. Bad input (:class:`UserError`) is printed as one
line naming the fix, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rs_transfer.errors import RunInterrupted, UserError

DEBUG_ENV = "RS_TRANSFER_DEBUG"  # =1: unexpected errors end with their traceback instead of one line

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
        if name in VERBOSE_COMMANDS:
            _add_verbose(p)
        p.set_defaults(_run=mod.run)
    return parser


VERBOSE_COMMANDS = ("run", "study")  # the commands that train


def _add_verbose(p: argparse.ArgumentParser) -> None:
    """``--verbose`` on the parser that parses a command's own options (each study subcommand for ``study``)."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        for sp in dict.fromkeys(subs[0].choices.values()):
            _add_verbose(sp)
    elif not any("--verbose" in a.option_strings for a in p._actions):
        p.add_argument("--verbose", action="store_true",
                       help="show mmengine's full log (environment, config, every log line) on the console instead "
                            "of the header and progress bar; it always goes to the work dir's log file")


# Terminal control sequences (colour, cursor moves), raw or as a repr()'d escape (``\x1b[31m``, ``\033[0m``): an
# error line may quote text that mmengine's formatter or rich coloured for a terminal; on a pipe, in a log file or
# repr()'d inside a message they show up as garbage, so they are removed.
_ANSI = re.compile(r"(?:\x1b|\\x1b|\\033|\\u001b|\\e)\[[0-?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return _ANSI.sub("", text)


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues an interrupted one: ``run`` gets ``--resume``; a study resumes by itself."""
    argv = list(argv)
    if argv[:1] == ["run"] and "--resume" not in argv:
        argv.append("--resume")
    cmd = shlex.join(["rs-transfer", *argv])
    if "pytorch" in argv or "slurm" in argv:
        cmd += "   (under the same torchrun/srun launcher)"
    return cmd


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None,
                 line: str | None = None) -> None:
    """Python warnings as ONE readable line on the console (no source path, no code line): ``warning: ...`` for
    ours, with the category and the package for a library's (``(FutureWarning in mmseg)``)."""
    lines = [s for s in plain(str(message)).strip().splitlines() if s.strip()]
    text = (lines[0] if lines else category.__name__).removeprefix("WARNING: ")
    package = Path(filename).parts
    ours = "rs_transfer" in package or any(p in ("tasks", "video") for p in package[-2:-1])
    origin = ""
    if not ours:
        site = next((package[i + 1] for i, p in enumerate(package[:-1]) if p in ("site-packages", "dist-packages")),
                    Path(filename).stem)
        origin = f" ({category.__name__} in {site})"
    print(f"warning: {text}{origin}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import warnings

    warnings.showwarning = show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "verbose", False):
        from rs_transfer.runner.console import verbose_call  # imports mmengine: only for the commands that train

        args._run = verbose_call(args._run)
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"rs-transfer {args.command}: error: {plain(str(err))}", file=sys.stderr)
        return 2
    except RunInterrupted as err:  # a checkpoint was saved: not an error, a pause
        if os.environ.get("RANK", "0") == "0":
            print(f"rs-transfer {args.command}: {err}\nresume with: {resume_command(argv)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"rs-transfer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an unforeseen failure: one line, the traceback on request
        if os.environ.get(DEBUG_ENV) or getattr(args, "verbose", False):
            raise
        lines = plain(str(err)).strip().splitlines()
        print(f"rs-transfer {args.command}: unexpected error: {type(err).__name__}: {lines[0] if lines else ''}"
              f" (run again with {DEBUG_ENV}=1 for the traceback; please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
