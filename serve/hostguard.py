"""The DNS-rebinding defence of `tmv serve`: answer only requests addressed to this server's own names.

A web page on another site can make a browser send requests to 127.0.0.1 under the page's own name
(by re-pointing that name's DNS), and then read the answers as its own. Such requests still carry the
foreign name in their Host header, so refusing every Host that is not one of the server's names stops
them. Cross-site POSTs (uploads) are refused by their Origin header likewise.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Iterable
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(header: str) -> str:
    """The name in a Host header value, without its port, lower case: 'a.b:80' -> 'a.b', '[::1]:80' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    if header.count(":") == 1:
        header = header.split(":")[0]
    return header.rstrip(".")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_names(bind: str, extra: Iterable[str] = ()) -> set[str]:
    """The names a browser may use to reach a server listening on `bind`: the loopback names always,
    the bound address itself, the machine's own names and addresses when bound to every interface,
    and any the user adds (--allow-host)."""
    names = {*LOOPBACK_NAMES, host_name(bind)}
    if bind in ("0.0.0.0", "::", ""):
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name.lower())
            try:
                names.update(info[4][0] for info in socket.getaddrinfo(name, None))
            except OSError:
                pass
    names.update(host_name(name) for name in extra)
    names.discard("")
    return names


class HostGuard:
    """ASGI middleware refusing requests whose Host (or, on POST, Origin) is not one of `allowed`."""

    def __init__(self, app, allowed: set[str]) -> None:
        self.app, self.allowed = app, allowed

    def refusal(self, scope) -> str | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = host_name(headers.get("host", ""))
        if host not in self.allowed:
            return (f"refused: Host {host or '(none)'!r} is not this server's name; open it as "
                    f"http://127.0.0.1:PORT/, or start it with --allow-host {host or 'NAME'}")
        origin = headers.get("origin")
        if scope.get("method") == "POST" and origin is not None:
            if host_name(urlsplit(origin).netloc) not in self.allowed:  # "null" (a sandboxed page) too
                return f"refused: a request from the page at {origin!r}, which is not this server's"
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            reason = self.refusal(scope)
            if reason is not None:
                body = json.dumps({"error": reason}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
