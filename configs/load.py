"""Reading a config file, applying ``--set`` overrides, and reporting errors in one line.

Usage::

    cfg = load_config(Path("configs/smoke.toml"), ["calibration.num_solo=4"])

Every failure raises :class:`ConfigError`, whose message names the file and the dotted key (or the
TOML line) and fits on one line; the CLI prints it and exits 2.
"""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .schema import IMMUTABLE_KEYS, ZpdConfig

SHIPPED_DIR = Path(__file__).resolve().parent
"""Where the shipped TOML files live (``configs/`` in a checkout, ``zpd/configs`` when installed)."""


class ConfigError(ValueError):
    """A config that cannot be used. ``str(err)`` is one line naming the file and key."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value`` where value is a TOML literal; a bare word is taken as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # `--set learner.path=/m` means the string "/m"
    except (ValueError, RecursionError) as exc:  # a 4400-digit integer, [[[[...]]]] nested past the stack
        raise ConfigError(f"--set {key}: unusable value ({_why(exc)})") from None
    return key.split("."), value


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _set_dotted(data: dict[str, Any], parts: list[str], value: Any, origin: str) -> None:
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts)}: {part} is not a table")
        node = child
    node[parts[-1]] = value


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in a config file are relative to that file."""
    for dotted in ("learner.path", "storage.shared_dir", "domains.dataset.path",
                   "domains.knowledge.corpus_dir", "curriculum.pool_dir"):
        *parents, key = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[key] = str((base / Path(value)).resolve())


def _format_validation(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "value_error":
        # A cross-field check names its own key(s):
        # "Value error, domains.x.y must ..." -> "domains.x.y must ..."
        msg = msg.removeprefix("Value error, ")
        if msg.startswith(loc + ".") or msg.startswith(loc + ":") or (loc == "(top level)" and msg):
            loc_text = msg.split()[0].rstrip(":")
            return f"{origin}: {loc_text}: {msg[len(loc_text):].lstrip(': ')}{_more(err)}"
    msg = " ".join(str(msg).split())
    return f"{origin}: {loc}: {msg}{_more(err)}"


def _more(err: ValidationError) -> str:
    return f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read forever
            raise ConfigError(f"{path}: not a regular file")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer over 4300 digits; tables nested past the stack
        raise ConfigError(f"{path}: unusable TOML: {_why(exc)}") from None


def load_config(path: Path, overrides: list[str] | None = None) -> ZpdConfig:
    """Load, override and validate. Raises ConfigError (one line) on any problem."""
    data = read_toml(path)
    _resolve_paths(data, path.resolve().parent)
    for text in overrides or []:
        parts, value = parse_override(text)
        _set_dotted(data, parts, value, f"--set {text}")
    cfg = validate(data, str(path))
    model = cfg.learner.path
    try:
        found = model is None or (model / "config.json").is_file()
        what = "" if found or model is None else (
            "does not exist" if not model.exists() else "is not an HF model directory (no config.json)")
    except OSError as exc:  # a path the OS cannot even look up (a name too long, say)
        found, what = False, f"cannot be looked up ({exc.strerror or exc})"
    if not found:
        shown = str(model) if len(str(model)) <= 200 else str(model)[:200] + "..."
        raise ConfigError(f"{key_origin('learner.path', path, overrides)}: learner.path: {shown} {what}")
    return cfg


def key_origin(key: str, path: Path, overrides: list[str] | None = None) -> str:
    """Where ``key``'s value came from: the last ``--set`` that sets it (or a table above it), else the
    config file (its default when the file does not set it either)."""
    for text in reversed(overrides or []):
        try:
            dotted = ".".join(parse_override(text)[0])
        except ConfigError:
            continue
        if key == dotted or key.startswith(dotted + "."):
            return f"--set {text}"
    return str(path)


def validate(data: dict[str, Any], origin: str) -> ZpdConfig:
    """Strict validation through JSON: ``true`` is not an integer (lax pydantic takes it as 1) and a string
    is not a number, while TOML's ints still fill float fields and strings still make paths."""
    try:
        text = json.dumps(data, default=str)  # TOML dates become strings, refused where a number is due
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{origin}: unusable value ({_why(exc)})") from None
    try:
        # learner.path itself is checked before the start writes anything (loop/learner_check.py), with
        # where its value came from.
        return ZpdConfig.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, origin)) from None
    except OSError as exc:  # a path the OS cannot even look up (a name too long, say)
        raise ConfigError(f"{origin}: {str(exc.filename)[:80]}: {exc.strerror or exc}") from None


def to_json(cfg: ZpdConfig) -> str:
    return json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True)


def _dotted(data: Any, key: str) -> Any:
    node = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def immutable_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys that differ between two resolved configs and may not change mid-run."""
    changed = []
    for key in IMMUTABLE_KEYS:
        if key == "domains.enabled":
            old_set = sorted(k for k, v in (old.get("domains") or {}).items() if v.get("enabled"))
            new_set = sorted(k for k, v in (new.get("domains") or {}).items() if v.get("enabled"))
            if old_set != new_set:
                changed.append("domains (the set of enabled domains)")
        elif key.startswith("domains.") and not (_dotted(new, ".".join(key.split(".")[:2]) + ".enabled")
                                                 and _dotted(old, ".".join(key.split(".")[:2]) + ".enabled")):
            continue  # a domain's own keys matter only while it is enabled
        elif _dotted(old, key) != _dotted(new, key):
            changed.append(key)
    return changed


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """All dotted keys whose values differ (for the resume log)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(changed_keys(a, b, dotted + "."))
        elif a != b:
            out.append(dotted)
    return out
