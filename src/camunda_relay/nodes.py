"""The engine nodes a worker talks to: one URL, a comma-separated list of URLs (the nodes of
one cluster on one database), or one host name expanded to every address it resolves to
(``CAMUNDA_URL_RESOLVE=all``: a Kubernetes headless Service), resolved again every
:data:`RESOLVE_EVERY` seconds.

Why every node: an engine's long poll is woken only by tasks created on its own node, so a
worker polling one node of several finds a task created elsewhere only when its poll ends.
The worker long-polls each node (:mod:`camunda_relay.worker.poller`); a task's requests
(complete, failure, BPMN error, lock calls, its instance's message) go first to the node
that locked it, every other request to the node that answered last, and each fails over to
the next node when one cannot be connected to (the request was not sent, so sending it
elsewhere is safe; the nodes share one database) or answers a 5xx that says it cannot work
(a 502/503/504, a 500 such as a lost database connection: the engine rolled the request
back, and a gateway's 502/504 after a commit is the same case as the caller's own retry,
which the worker already tells apart). A node that fails so is not preferred; an optimistic
locking failure is the engine's answer to the request, not a sick node, and is raised.

A node reached by an address keeps its host name for the ``Host`` header and the TLS server
name, so virtual hosts and certificates work as with the name.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["RESOLVE_EVERY", "Node", "Nodes", "Resolver"]

log = logging.getLogger(__name__)

RESOLVE_EVERY = 30.0
"""Seconds between two resolutions of the host name (``CAMUNDA_URL_RESOLVE=all``)."""

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Node:
    """One engine node: where its REST API is, and the host name to present there."""

    url: str  # the REST API's base URL (an address in place of the name when resolved)
    host: str | None = None  # the original host[:port] for the Host header, when resolved
    server_name: str | None = None  # the TLS server name, when resolved

    @property
    def label(self) -> str:
        """The node as a log line may name it (no user info, no path)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


async def _getaddrinfo(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(entry[4][0]) for entry in found})


class Nodes:
    """The current nodes (:attr:`current`) and the one answering best (:meth:`ordered`)."""

    def __init__(
        self, urls: Sequence[str], *, resolve: bool = False, resolver: Resolver = _getaddrinfo
    ) -> None:
        if not urls:
            raise ValueError("at least one engine URL is needed")
        self._urls = tuple(urls)
        self._resolve = resolve
        self._resolver = resolver
        self.current: tuple[Node, ...] = tuple(Node(url) for url in self._urls)
        self._preferred = 0

    @property
    def resolving(self) -> bool:
        return self._resolve

    def ordered(self) -> list[Node]:
        """Every node, the one that answered last first (the others in their order)."""
        nodes = list(self.current)
        start = self._preferred % len(nodes)
        return nodes[start:] + nodes[:start]

    def answered(self, node: Node) -> None:
        """``node`` answered (a success or the engine's verdict, not a 5xx that says it cannot
        work): requests go there first from now on."""
        if node in self.current:
            self._preferred = self.current.index(node)

    async def refresh(self) -> bool:
        """Resolve the host name again (``resolve`` only); True when the nodes changed. A
        name that does not resolve now keeps the nodes known (logged)."""
        if not self._resolve:
            return False
        url = self._urls[0]
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self._resolver(host, port)
        except OSError as error:
            log.warning("cannot resolve %s (%s); keeping the nodes known", host, error)
            return False
        if not addresses:
            return False
        netloc_host = parts.netloc.rsplit("@", 1)[-1]
        userinfo = parts.netloc[: -len(netloc_host)] if "@" in parts.netloc else ""
        nodes = []
        for address in addresses:
            shown = f"[{address}]" if ":" in address else address
            netloc = f"{userinfo}{shown}:{port}"
            nodes.append(
                Node(
                    urlunsplit((parts.scheme, netloc, parts.path, "", "")),
                    host=netloc_host,
                    server_name=host,
                )
            )
        fresh = tuple(nodes)
        if fresh == self.current:
            return False
        log.info(
            "%s resolves to %d engine nodes: %s",
            host,
            len(fresh),
            ", ".join(node.label for node in fresh),
        )
        self.current = fresh
        self._preferred = 0
        return True
