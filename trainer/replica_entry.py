"""The launcher of one replica inside a Ray job (stdlib only: it runs on a cluster node as a file).

    python replica_entry.py --toward HEAD_HOST -- vllm serve /shared/learner --host {host} --port {port}

On the node it picks the address that reaches ``HEAD_HOST`` (127.0.0.1 when that is loopback) and a
port the OS gives, puts them into the command's ``{host}`` / ``{port}``, prints one line
``ZPD_REPLICA {"host": ..., "port": ...}`` (the daemon reads it from the job's logs) and becomes the
server (``exec``), so stopping the job stops the server.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys

MARKER = "ZPD_REPLICA "


def node_address(toward: str) -> str:
    """This node's address on the route to ``toward`` (no packet is sent: UDP connect only routes)."""
    try:
        if ipaddress.ip_address(toward).is_loopback:
            return "127.0.0.1"
    except ValueError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((toward, 9))
        return s.getsockname()[0]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "--toward" or argv[2] != "--":
        sys.stderr.write("usage: replica_entry.py --toward HOST -- COMMAND...\n")
        return 2
    host = node_address(argv[1])
    port = free_port(host)
    command = [a.replace("{host}", host).replace("{port}", str(port)) for a in argv[3:]]
    print(MARKER + json.dumps({"host": host, "port": port}), flush=True)
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
