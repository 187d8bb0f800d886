"""A TCP port on 127.0.0.1 that is free right now, for a process group's rendezvous (``MASTER_PORT``)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Ask the kernel for an unused port; another process may take it later, so use it at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
