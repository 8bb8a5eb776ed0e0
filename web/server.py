"""`flowledger web`: serve the board with uvicorn until SIGTERM or SIGINT, then exit 0.

The socket is bound here before uvicorn starts, so a port in use is one clear line (exit 1) instead of a log
record; uvicorn's own signal handling is replaced by one that only stops the server (it would otherwise
re-raise the signal after a clean shutdown and turn exit 0 into death by signal).
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from flowledger.tasks.core.errors import OperationRefusedError
from flowledger.web.app import build_app
from flowledger.web.security import TOKEN_ENV, decide_access
from flowledger.web.source import LedgerSource

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `stopping_on_signals` installed ours before the ready line


@contextmanager
def stopping_on_signals(server: uvicorn.Server) -> Iterator[None]:
    """SIGTERM and SIGINT ask the server to stop; installed before the ready line so none is ever missed."""
    def stop(signum: int, _frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OperationRefusedError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(*, host: str, port: int, allow_actions: bool, env_token: str | None, state_dir: str | None,
          database_url: str | None) -> int:
    access = decide_access(host, env_token, allow_actions=allow_actions)
    sock = bind(host, port)
    source = LedgerSource.from_config(state_dir, database_url)
    app = build_app(source, access)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    shown = f"[{host}]" if ":" in host else host
    with stopping_on_signals(server):
        if allow_actions and not access.token_from_env:
            sys.stderr.write(f"Action token (set {TOKEN_ENV} to choose it): {access.token}\n")
        # the last line before serving: scripts and tests wait for it (with --port 0 it names the port chosen)
        sys.stderr.write(f"flowledger web: serving http://{shown}:{sock.getsockname()[1]}/ "
                         f"({'actions allowed' if allow_actions else 'read-only'})\n")
        sys.stderr.flush()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            source.close()
    return 0
