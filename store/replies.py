"""A durable log of paid-for replies (the teacher's questions), so a killed phase does not pay for them again.

    log = ReplyLog(work_dir / "teacher_replies.jsonl")
    reply = log.get(key)                 # None, or the dict stored under key by a run before a kill
    log.put(key, {"text": ..., ...})     # appended and fsynced before the caller uses the reply

SYNTHESIZE commits its tasks in one transaction at its end; its teacher-written questions are HTTP calls
that may take minutes in all. Each reply is appended here (one JSON line, flushed and fsynced, so a kill
loses at most the call in flight) under a key the phase re-derives on a rerun (its seed and the prompt):
the rerun replays the stored replies and makes the same tasks. A torn last line (a kill mid-write) is
ignored. The file lives in the round's work directory and goes with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ReplyLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._replies: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # the torn line of a write a kill interrupted
                    if (
                        isinstance(rec, dict)
                        and isinstance(rec.get("key"), str)
                        and isinstance(rec.get("reply"), dict)
                    ):
                        self._replies[rec["key"]] = rec["reply"]

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._replies.get(key)

    def put(self, key: str, reply: dict[str, Any]) -> None:
        """Append ``reply`` under ``key`` durably (fsync) before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "reply": reply}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._replies[key] = reply
