"""The ``zpd`` command. Arguments are parsed before anything heavy is imported (torch, transformers),
so ``zpd --help`` and ``zpd status`` answer at once.

    zpd start   --config FILE --state-dir DIR [--rounds N] [--set dotted.key=value ...] [--from-snapshot PATH]
                [--log-format human|json]
    zpd status  --state-dir DIR [--json]
    zpd snapshot --state-dir DIR --out PATH
    zpd rollback --state-dir DIR --round N
    zpd export  --state-dir DIR --round N --what {train,exam,pretrain,review} --format {parquet,jsonl}
                --out PATH
    zpd serve   --state-dir DIR [--round N] [--host 127.0.0.1] [--port P]
    zpd review  --state-dir DIR --import FILE
    zpd report  --state-dir DIR --out DIR

Exit codes: 0 success, 1 runtime failure, 2 bad usage or config, 3 state directory busy,
4 state directory corrupt, foreign or newer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from zpd.loop.terminal import one_line

if TYPE_CHECKING:  # the store is imported by the commands that read it, not by `zpd --help`
    from zpd.store.db import Database

WRITING_COMMANDS = ("start", "rollback", "review")
"""Their tracebacks go to DIR/logs/; the read-only commands' to $XDG_STATE_HOME/zpd/, never into DIR."""


def _traceback_dir(command: str, state_dir: Path | None) -> Path:
    if command in WRITING_COMMANDS and state_dir is not None and (state_dir / "state.db").is_file():
        return state_dir / "logs"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "zpd"


def report_crash(command: str, state_dir: Path | None, exc: BaseException) -> str:
    """Write the traceback of an unexpected exception to a file; return the one line that names it."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = _traceback_dir(command, state_dir) / f"crash-{command}-{stamp}-{os.getpid()}.txt"
    text = "".join(traceback.format_exception(exc))
    try:
        from zpd.store.atomic import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        where = f"traceback in {path}"
    except OSError as err:
        where = f"traceback not saved: {err.strerror or err}"
    return one_line(f"zpd {command}: internal error: {type(exc).__name__}: {str(exc)[:200]} ({where})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zpd",
                                     description="Train a language model at the edge of what it can do.")
    parser.add_argument("--version", action="version", version=f"zpd {__import__('zpd').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("start",
                       help="run the daemon in the foreground; resumes whatever the state directory holds")
    p.add_argument("--config", required=True, type=Path, help="TOML config file (see configs/)")
    p.add_argument("--state-dir", required=True, type=Path, help="state directory (local disk)")
    p.add_argument("--rounds", type=int, default=None, metavar="N", help="exit 0 once round N is committed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (TOML literal), e.g. --set calibration.num_solo=4")
    p.add_argument("--from-snapshot", type=Path, default=None, metavar="PATH",
                   help="seed an empty state directory from a snapshot archive")
    p.add_argument("--log-format", choices=["human", "json"], default="human",
                   help="stdout: human lines with progress bars (default), or JSON lines for "
                        "systemd's journal; logs/zpd.jsonl holds JSON lines either way")

    p = sub.add_parser("status", help="what a state directory holds and what its daemon is doing (read-only)")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = sub.add_parser("snapshot", help="a portable archive of the last committed round (read-only)")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="archive file to write (a tar)")

    p = sub.add_parser("rollback", help="learner, exam and curriculum state back to round N")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--round", required=True, type=int, metavar="N")

    p = sub.add_parser("export", help="a committed round's train/exam/pretrain/review set (read-only)")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--round", required=True, type=int, metavar="N")
    p.add_argument("--what", required=True, choices=["train", "exam", "pretrain", "review"])
    p.add_argument("--format", required=True, choices=["parquet", "jsonl"])
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("review",
                       help="record verdicts on the human-review queue (keep with an answer, or drop)")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--import", dest="import_file", required=True, type=Path, metavar="FILE",
                   help="JSONL (or parquet) rows: task_id, verdict keep|drop, answer (keep), note")

    p = sub.add_parser("report", help="plots and tables of a run: PNGs, report.md, report.json (read-only)")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="directory to write into (created if absent)")

    p = sub.add_parser("serve",
                       help="an OpenAI-compatible endpoint for a committed round's learner (read-only)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-dir", type=Path)
    where.add_argument("--learner", type=Path, metavar="PATH", help="serve this learner directory as it is")
    p.add_argument("--enable-lora", action="store_true",
                   help="vLLM's runtime adapter routes: POST /v1/load_lora_adapter, /v1/unload_lora_adapter")
    p.add_argument("--round", type=int, default=None, metavar="N",
                   help="serve round N's learner (default: the current learner, followed as the daemon "
                        "commits)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; beyond loopback a token is required")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one; printed on start)")
    p.add_argument("--token-env", default="ZPD_SERVE_TOKEN", metavar="VAR",
                   help="environment variable holding the bearer token (required on every request when set)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the learner runs")
    return parser


def cmd_start(args: argparse.Namespace) -> int:
    from zpd.configs.load import ConfigError, key_origin, load_config

    if args.rounds is not None and args.rounds < 0:
        print(one_line("zpd start: --rounds must be >= 0"), file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
        from zpd.loop.learner_check import check_learner  # a user's model: checked before anything is written

        notes = check_learner(cfg, lambda key: key_origin(key, args.config, args.overrides))
    except ConfigError as exc:
        print(one_line(f"zpd start: config error: {exc}"), file=sys.stderr)
        return 2
    from zpd.loop.logs import set_console_format

    set_console_format(args.log_format)
    if args.from_snapshot is None:  # (with it, the daemon checks the target first: its own exit codes)
        from zpd.store.lock import StateDirRefused, check_state_dir

        try:  # read-only, as the daemon's own step 1; a refusal exits before torch is imported (seconds)
            check_state_dir(args.state_dir)
        except StateDirRefused as exc:
            print(one_line(f"zpd start: {exc}"), file=sys.stderr)
            return exc.code
    from zpd.loop.daemon import start

    return start(args.state_dir, cfg, args.rounds, from_snapshot=args.from_snapshot, notes=notes)


def cmd_status(args: argparse.Namespace) -> int:
    from zpd.loop.status import StatusError, collect, render

    try:
        status = collect(args.state_dir)
    except StatusError as exc:
        print(one_line(f"zpd status: {exc}"), file=sys.stderr)
        return exc.code
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def _committed_rounds(state_dir: Path) -> tuple[Database, set[int]]:
    from zpd.store.db import open_readonly
    from zpd.store.ledger_rounds import committed_rounds
    from zpd.store.rounds import committed_on_disk

    db = open_readonly(state_dir / "state.db")
    in_db = committed_rounds(db)
    return db, in_db | set(committed_on_disk(state_dir))


def cmd_snapshot(args: argparse.Namespace) -> int:
    import zpd
    from zpd.store.archive import SnapshotError, write_snapshot
    from zpd.store.db import StoreError

    state_dir = args.state_dir.resolve()
    try:
        db, committed = _committed_rounds(state_dir)
        db.conn.close()
        if not committed:
            print(one_line(f"zpd snapshot: {state_dir} has no committed round yet"), file=sys.stderr)
            return 1
        index = write_snapshot(state_dir, max(committed), args.out, zpd.__version__)
    except StoreError as exc:
        print(one_line(f"zpd snapshot: {exc}"), file=sys.stderr)
        return 2 if "no state database" in str(exc) else 4
    except (SnapshotError, OSError) as exc:
        print(one_line(f"zpd snapshot: {exc}"), file=sys.stderr)
        return 1
    print(json.dumps({"round": index["round"], "out": str(args.out.resolve()), "files": len(index["files"])}))
    return 0


def _refuse_inside_a_run(command: str, state_dir: Path) -> int | None:
    """For the writing commands: a directory holding a state.db that is not a run's root (a committed
    round's directory, another run's abandoned/) is refused before the lock, untouched."""
    from zpd.store.lock import StateDirRefused, check_state_dir

    if not (state_dir / "state.db").exists():
        return None  # the command's own check says what is missing
    try:
        check_state_dir(state_dir.resolve())
    except StateDirRefused as exc:
        print(one_line(f"zpd {command}: {exc}"), file=sys.stderr)
        return exc.code
    return None


def cmd_rollback(args: argparse.Namespace) -> int:
    from zpd.loop.rollback import RollbackError, rollback
    from zpd.store.db import StoreError
    from zpd.store.lock import LockHeld

    refused = _refuse_inside_a_run("rollback", args.state_dir)
    if refused is not None:
        return refused
    try:
        moved = rollback(args.state_dir, args.round)
    except LockHeld as exc:
        print(one_line(f"zpd rollback: refused: {exc}"), file=sys.stderr)
        return 3
    except RollbackError as exc:
        print(one_line(f"zpd rollback: {exc}"), file=sys.stderr)
        return 2
    except StoreError as exc:
        print(one_line(f"zpd rollback: {exc}"), file=sys.stderr)
        return 4
    print(json.dumps({"round": args.round, "moved_aside": moved}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from zpd.store.db import StoreError
    from zpd.store.export import rows_for, write_rows

    state_dir = args.state_dir.resolve()
    try:
        db, committed = _committed_rounds(state_dir)
    except StoreError as exc:
        print(one_line(f"zpd export: {exc}"), file=sys.stderr)
        return 2 if "no state database" in str(exc) else 4
    try:
        if args.round not in committed:
            print(one_line(f"zpd export: round {args.round} is not committed in {state_dir}"),
                  file=sys.stderr)
            return 2
        rows = rows_for(db, args.round, args.what)
        write_rows(rows, args.format, args.out)
    except OSError as exc:
        print(one_line(f"zpd export: {exc}"), file=sys.stderr)
        return 1
    finally:
        db.conn.close()
    print(json.dumps({"round": args.round, "what": args.what, "rows": len(rows),
                      "out": str(args.out.resolve())}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from zpd.loop.serve import ServeError, serve

    if args.round is not None and args.round < 0 or not 0 <= args.port <= 65535:
        print(one_line("zpd serve: --round must be >= 0 and --port in 0..65535"), file=sys.stderr)
        return 2
    try:
        return serve(args.state_dir, args.round, args.host, args.port, args.token_env, args.device,
                     learner=args.learner, enable_lora=args.enable_lora)
    except ServeError as exc:
        print(one_line(f"zpd serve: {exc}"), file=sys.stderr)
        return exc.code


def cmd_review(args: argparse.Namespace) -> int:
    import stat

    from zpd.loop.review import ReviewError, import_verdicts
    from zpd.store.db import StoreError
    from zpd.store.lock import LockHeld

    refused = _refuse_inside_a_run("review", args.state_dir)
    if refused is not None:
        return refused
    if args.import_file.exists() and not stat.S_ISREG(args.import_file.stat().st_mode):
        print(one_line(f"zpd review: {args.import_file}: not a regular file"), file=sys.stderr)
        return 2
    try:
        counts = import_verdicts(args.state_dir, args.import_file)
    except LockHeld as exc:
        print(one_line(f"zpd review: refused: {exc}"), file=sys.stderr)
        return 3
    except ReviewError as exc:
        print(one_line(f"zpd review: {exc}"), file=sys.stderr)
        return 2
    except StoreError as exc:
        print(one_line(f"zpd review: {exc}"), file=sys.stderr)
        return 4
    print(json.dumps(counts))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from zpd.loop.report import ReportError, report

    try:
        written = report(args.state_dir, args.out)
    except ReportError as exc:
        print(one_line(f"zpd report: {exc}"), file=sys.stderr)
        return exc.code
    print(json.dumps({"out": str(args.out.resolve()), "files": [p.name for p in written]}))
    return 0


COMMANDS = {"start": cmd_start, "status": cmd_status, "snapshot": cmd_snapshot, "rollback": cmd_rollback,
            "export": cmd_export, "serve": cmd_serve,
            "review": cmd_review, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `zpd status | head -1`: the reader left; say nothing more
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line on the terminal, the traceback in a file it names
        state_dir = getattr(args, "state_dir", None)
        print(report_crash(args.command, Path(state_dir).resolve() if state_dir else None, exc),
              file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The ``zpd`` command (the console script) and ``python -m zpd.loop.cli``: ``main``, then the process
    ends through ``exit_now``, without the interpreter's teardown of torch and transformers (1-6 s)."""
    from zpd.trainer.quick_exit import exit_now

    exit_now(main())


if __name__ == "__main__":
    run()
