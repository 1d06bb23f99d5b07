"""Small network helpers shared by tests."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A local TCP port that nobody listens on right now (bound once, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
