"""systemd readiness and watchdog notifications (sd_notify(3)) without a dependency.

Under ``Type=notify`` systemd sets ``$NOTIFY_SOCKET``; the daemon sends ``READY=1`` once the lock, the
store and the metrics server are up, ``WATCHDOG=1`` from its main loop at least every
``watchdog_interval_seconds()``, ``STATUS=...`` for ``systemctl status``, and ``STOPPING=1`` on shutdown.
Outside systemd every call is a no-op that returns False.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send one sd_notify message; True if it was sent. Never raises: a lost notification is logged."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # e.g. vsock:..., not used for services
        log.warning("unsupported NOTIFY_SOCKET %r; %s not sent", address, message.split("=", 1)[0])
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as e:
        log.warning("sd_notify %s failed: %s", message.split("=", 1)[0], e)
        return False
    return True


def watchdog_interval_seconds() -> float | None:
    """How often to send WATCHDOG=1: half of ``$WATCHDOG_USEC``, or None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000
