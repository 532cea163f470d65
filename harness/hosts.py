"""A hosts-style file as one process's name service: its names resolve to its addresses
(``address name ...`` per line, ``#`` comments; read at every lookup, so rewriting the file
changes the answer at once), every other name as usual. S27 changes a name's addresses under
a running worker this way, as a Kubernetes headless Service's change on a scale-down, without
touching the machine's resolver."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["install", "read", "resolving_from"]

GetAddrInfo = Callable[..., list[Any]]


def read(path: Path | str) -> dict[str, list[str]]:
    """Each name of the file (lower case) and its addresses, in the file's order."""
    names: dict[str, list[str]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            names.setdefault(name.lower(), []).append(fields[0])
    return names


def resolving_from(path: Path | str, real: GetAddrInfo) -> GetAddrInfo:
    """``socket.getaddrinfo`` answering the file's names from it (IPv4), the rest by ``real``."""

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        addresses = read(path).get(str(name).lower()) if name else None
        if not addresses:
            return real(host, port, family, type, proto, flags)
        kind = type or socket.SOCK_STREAM
        return [
            (socket.AF_INET, kind, proto or socket.IPPROTO_TCP, "", (address, int(port or 0)))
            for address in addresses
        ]

    return getaddrinfo


def install(path: Path | str) -> None:
    """Resolve the file's names from it in this process from now on."""
    socket.getaddrinfo = resolving_from(path, socket.getaddrinfo)
