"""HTTP-level guards of the app's server: the login (`LoginGuard`: accounts, a growing delay after repeated
failures) and the requests (`RequestGuard`: no upload route, a cap on request bodies). No gradio here.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("dream3d.app")

FREE_FAILURES = 5  # wrong logins in a row before each further attempt is delayed
FIRST_DELAY = 1.0  # seconds the first delayed attempt waits; each further failure doubles it
MAX_DELAY = 30.0
MAX_REQUEST_BYTES = 8 * 2**20  # a request body (the largest page input is a 1M-character config)


class LoginGuard:
    """The accounts (user -> password) of the login, checked in constant time per password by `check`, Gradio's
    `auth` callable (a coroutine function: Gradio awaits only those; any other callable's result is taken as is).

    After FREE_FAILURES wrong logins in a row (any user, any client), every further attempt waits before it is
    checked, FIRST_DELAY seconds doubling with each failure up to MAX_DELAY; attempts that arrive together wait
    one after the other, so parallel guessing is no faster. A right login resets the count. The wait is an
    asyncio sleep: the server keeps serving everyone else meanwhile.
    """

    def __init__(self, accounts: dict[str, str], sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.accounts = dict(accounts)
        self.failures = 0
        self.delays: list[float] = []  # the wait of every attempt so far (seconds; 0 for the free ones)
        self._sleep, self._clock = sleep, clock
        self._next = 0.0  # monotonic time before which no delayed attempt is checked

    def delay(self) -> float:
        """The wait of the next attempt (seconds)."""
        extra = self.failures - FREE_FAILURES
        return 0.0 if extra < 0 else min(FIRST_DELAY * 2.0 ** extra, MAX_DELAY)

    async def check(self, username: str, password: str) -> bool:
        """Whether (username, password) is an account, after the wait the failures so far call for."""
        wait = self.delay()
        if wait:
            now = self._clock()
            self._next = max(now, self._next) + wait
            wait = self._next - now
            await self._sleep(wait)
        self.delays.append(wait)
        known = self.accounts.get(username)
        ok = hmac.compare_digest((known or "").encode(), password.encode()) and known is not None
        if ok:
            self.failures = 0
        else:
            self.failures += 1
            if self.failures == FREE_FAILURES:
                log.warning("%d wrong logins in a row; each further attempt waits (from %gs, doubling, at most "
                            "%gs) until a right one", FREE_FAILURES, FIRST_DELAY, MAX_DELAY)
        return ok


class RequestGuard:
    """ASGI middleware in front of the Gradio app: the upload route answers 403 (the page has no upload
    control; files stored there would fill the disk), and a request whose declared body exceeds `max_bytes`
    answers 413 before it is read."""

    def __init__(self, app, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                status, text = refusal
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": text.encode()})
                return
        await self.app(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str] | None:
        """(status, text) of a request this guard refuses, else None."""
        if scope.get("method") == "POST" and scope.get("path", "").rstrip("/").endswith("/upload"):
            return 403, "this app takes no uploads"
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if (int(length) if length.isdigit() else 0) > self.max_bytes:
            return 413, f"request too large (at most {self.max_bytes} bytes)"
        return None


__all__ = ["LoginGuard", "RequestGuard"]
