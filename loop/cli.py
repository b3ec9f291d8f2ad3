"""The ``zpd`` command. Arguments are parsed before anything heavy is imported (torch, transformers),
so ``zpd --help`` and ``zpd status`` answer at once.

    zpd start   --config FILE --state-dir DIR [--rounds N] [--set dotted.key=value ...] [--from-snapshot PATH]
    zpd status  --state-dir DIR [--json]

Exit codes: 0 success, 1 runtime failure, 2 bad usage or config, 3 state directory busy,
4 state directory corrupt, foreign or newer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zpd", description="Train a language model at the edge of what it can do.")
    parser.add_argument("--version", action="version", version=f"zpd {__import__('zpd').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("start", help="run the daemon in the foreground; resumes whatever the state directory holds")
    p.add_argument("--config", required=True, type=Path, help="TOML config file (see configs/)")
    p.add_argument("--state-dir", required=True, type=Path, help="state directory (local disk)")
    p.add_argument("--rounds", type=int, default=None, metavar="N", help="exit 0 once round N is committed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (TOML literal), e.g. --set calibration.num_solo=4")
    p.add_argument("--from-snapshot", type=Path, default=None, metavar="PATH",
                   help="seed an empty state directory from a snapshot archive")

    p = sub.add_parser("status", help="what a state directory holds and what its daemon is doing (read-only)")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object")
    return parser


def cmd_start(args: argparse.Namespace) -> int:
    from zpd.configs.load import ConfigError, load_config

    if args.rounds is not None and args.rounds < 0:
        print("zpd start: --rounds must be >= 0", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"zpd start: config error: {exc}", file=sys.stderr)
        return 2
    if args.from_snapshot is not None:
        print("zpd start: --from-snapshot is not available in this build", file=sys.stderr)
        return 2
    from zpd.loop.daemon import start

    return start(args.state_dir, cfg, args.rounds)


def cmd_status(args: argparse.Namespace) -> int:
    from zpd.loop.status import StatusError, collect, render

    try:
        status = collect(args.state_dir)
    except StatusError as exc:
        print(f"zpd status: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


COMMANDS = {"start": cmd_start, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
