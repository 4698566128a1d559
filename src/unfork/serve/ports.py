"""Ports: is the one the user asked for free, and which one can a temporary server take."""

from __future__ import annotations

import errno
import socket

from unfork.errors import UserError


class PortInUseError(UserError):
    pass


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int) -> None:
    """Raise a clear error if ``host:port`` cannot be bound (taken, privileged, no such address)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        # Same option the servers use: a port in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is already in use.",
                                 hint="choose another with --port, or stop the program that holds it "
                                      f"(e.g. 'ss -ltnp | grep :{port}')") from None
        if exc.errno == errno.EACCES:
            raise UserError(f"not allowed to listen on port {port} (ports below 1024 need privileges).",
                            hint="choose a port above 1024 with --port") from None
        if exc.errno in (errno.EADDRNOTAVAIL, socket.EAI_NONAME) or isinstance(exc, socket.gaierror):
            raise UserError(f"cannot listen on address '{host}': no network interface has it.",
                            hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)") from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the system has no use for right now (another program could still take it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
