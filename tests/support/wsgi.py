"""Serving a WSGI app (the gateway) over real HTTP: the tests' and the benchmarks' one way.

    with serve_wsgi(create_gateway(container)) as url:
        httpx.get(f"{url}/me", headers=...)

werkzeug's threaded server (HTTP/1.1; it answers every request with ``Connection: close``) on
127.0.0.1, on a daemon thread. The server binds port 0, so the kernel hands it a free port that
nothing can take between choosing and binding; the URL says which. Leaving the block stops the
server and closes its socket: the port refuses connections afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from werkzeug.serving import WSGIRequestHandler, make_server

# How long the serving loop sleeps between checks for a shutdown: the most ``serve_wsgi``'s exit waits.
SHUTDOWN_POLL_SECONDS = 0.05


class _Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"


class _QuietHandler(_Handler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


@contextmanager
def serve_wsgi(app: Callable[..., Iterable[bytes]], *, log_requests: bool = True) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port until the block ends; yields its base URL
    (``http://127.0.0.1:PORT``, no trailing slash).

    ``log_requests=False`` drops werkzeug's line per request (the benchmarks: formatting it costs
    CPU the figures should not include).
    """
    server = make_server("127.0.0.1", 0, app, threaded=True,
                         request_handler=_Handler if log_requests else _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                              name=f"wsgi-{server.server_port}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()  # returns once serve_forever has left its loop (it closes the socket then)
        thread.join(timeout=10)
        server.server_close()
