"""The threading HTTP server behind ``zpd serve``, with a cap on connections handled at once.

``server_class(host, max_connections)`` is a ``ThreadingHTTPServer`` subclass for the host's address
family. A connection past the cap is answered 503 from the accepting thread (a short write, never a
read) and closed, so a burst of clients cannot pile up threads; a client that leaves mid-request is
logged at debug level, not as a failure.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

log = logging.getLogger("zpd.serve")

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         b"Retry-After: 1\r\nContent-Length: 116\r\n\r\n"
         b'{"error": {"message": "too many connections; retry shortly", "type": "server_error", '
         b'"param": null, "code": "busy"}}')

# socketserver types a request as socket | tuple[bytes, socket] (TCP or UDP); ours are TCP sockets
_Request = Any
_Address = Any


def server_class(host: str, max_connections: int) -> type[ThreadingHTTPServer]:
    """A server class for ``host`` (IPv6 when it has a colon) that handles at most ``max_connections``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    slots = threading.BoundedSemaphore(max_connections)

    class _Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True
        request_queue_size = 512  # a burst waits in the backlog (then gets a 503) instead of being reset

        def process_request(self, request: _Request, client_address: _Address) -> None:
            if not slots.acquire(blocking=False):
                try:  # answered from the accepting thread: a short write, never a read
                    request.settimeout(1.0)
                    request.sendall(_BUSY)
                except OSError:
                    pass
                self.shutdown_request(request)
                return
            super().process_request(request, client_address)

        def handle_error(self, request: _Request, client_address: _Address) -> None:
            exc = sys.exc_info()[1]
            if isinstance(exc, ConnectionError | TimeoutError):  # a client that left: nothing to report
                log.debug("client %s went away: %s", client_address, exc)
                return
            log.exception("request from %s failed", client_address)

        def process_request_thread(self, request: _Request, client_address: _Address) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

    return _Server
