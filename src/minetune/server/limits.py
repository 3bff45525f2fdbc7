"""Bounded resources: how big a request body may be, and where upstream model calls run.

- :class:`BodyLimit` (pure ASGI middleware) counts body bytes as they arrive, for chunked bodies
  as for declared ones, before any route (or auth) looks at the request; at the limit it stops
  reading and answers 413 with ``Connection: close``.
- :class:`UpstreamPool`: upstream-bound work (model calls, and the streams that read them) runs
  on a bounded thread pool of its own, never on the thread pool that serves pages, logins and
  feedback; each user may have only so many such requests in flight (more get 429 with
  ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Any, TypeVar

from fastapi import HTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("minetune.server")

T = TypeVar("T")
RETRY_AFTER_SECONDS = 1


# -- request bodies --------------------------------------------------------------------------------


class _TooLarge(Exception):
    """Raised into the app by ``receive`` once the body passed the limit."""


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, counting the bytes as they arrive.

    A declared ``Content-Length`` over the limit is refused without reading anything. Otherwise
    the app's ``receive`` is counted; once the count passes the limit, ``receive`` raises into the
    app, whatever the app answers is dropped, and the 413 goes out instead (with
    ``Connection: close``, so the server reads no more of the body)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"{declared:,} bytes")
            return
        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:
                raise _TooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to a body it could not read; the 413 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send, f"over {self.max_bytes:,} bytes")

    async def _refuse(self, send: Send, size: str) -> None:
        message = f"Request body too large: {size} (limit {self.max_bytes:,})."
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


# -- upstream calls --------------------------------------------------------------------------------


class Slot:
    """One upstream-bound request of one user in flight; :meth:`release` (idempotent) ends it."""

    def __init__(self, pool: UpstreamPool, user: str) -> None:
        self._pool = pool
        self.user = user
        self._released = False

    def release(self) -> None:
        with self._pool._lock:
            if self._released:
                return
            self._released = True
            self._pool._in_flight[self.user] -= 1
            if self._pool._in_flight[self.user] <= 0:
                del self._pool._in_flight[self.user]


class UpstreamPool:
    """A bounded thread pool for upstream-bound work, apart from the one that serves pages, and a
    cap of ``per_user`` upstream-bound requests in flight per user.

    When all ``workers`` threads are busy, further work waits its turn here; pages, logins and
    feedback, served by the app's own thread pool, do not wait behind it."""

    def __init__(self, workers: int, per_user: int) -> None:
        self.workers = workers
        self.per_user = per_user
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minetune-upstream")
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def in_flight(self, user: str) -> int:
        with self._lock:
            return self._in_flight[user]

    def admit(self, user: str) -> Slot:
        """A slot for one more request of ``user``, or 429 (with ``Retry-After``) if they have
        ``per_user`` in flight already."""
        with self._lock:
            if self._in_flight[user] >= self.per_user:
                raise HTTPException(
                    status_code=429,
                    detail=f"Too many requests to the model in flight for this user (limit {self.per_user}); "
                    "try again when one has finished.",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self._in_flight[user] += 1
        return Slot(self, user)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the pool and wait for it without holding any other thread."""
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    async def respond(self, user: str, handler: Callable[..., Any], *args: Any) -> Any:
        """Run a route's blocking ``handler(*args)`` on the pool under one of ``user``'s slots.

        A streaming response keeps the slot until it has been sent or abandoned; its body should
        come from :meth:`iterate`, so that it too is read on the pool."""
        slot = self.admit(user)
        future = self._executor.submit(handler, *args)
        try:
            result = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda _f: slot.release())  # the thread may still be running
            raise
        except BaseException:
            slot.release()
            raise
        if isinstance(result, StreamingResponse):
            return _Held(result, slot)
        slot.release()
        return result

    def iterate(self, items: Iterator[T]) -> PoolIterator[T]:
        """An async iterator that steps the blocking iterator ``items`` on the pool."""
        return PoolIterator(self, items)

    def start(self, work: Callable[[Callable[[Any], None]], Any], slot: Slot) -> Events:
        """Run ``work(emit)`` on the pool and hand what it emits to the event loop as ``delta``
        events, then its result as ``done`` (or what it raised as ``error``). ``slot`` is released
        when the work ends, whether or not anyone still reads the events."""
        loop = asyncio.get_running_loop()
        events = Events()

        def put(kind: str, payload: Any) -> None:
            with contextlib.suppress(RuntimeError):  # RuntimeError: the event loop is gone (shutdown)
                loop.call_soon_threadsafe(events.queue.put_nowait, (kind, payload))

        def run() -> None:
            try:
                result = work(lambda item: put("delta", item))
            except BaseException as exc:  # reported to the reader, never lost in the thread
                put("error", exc)
            else:
                put("done", result)
            finally:
                slot.release()

        try:
            self._executor.submit(run)
        except BaseException:
            slot.release()
            raise
        return events

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Events:
    """What :meth:`UpstreamPool.start`'s work emitted: ``(kind, payload)`` pairs, awaited with
    :meth:`next`; ``kind`` is ``delta``, then ``done`` or ``error`` last."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def next(self) -> tuple[str, Any]:
        return await self.queue.get()


def _step(items: Iterator[T]) -> tuple[bool, T | None]:
    try:
        return False, next(items)
    except StopIteration:
        return True, None


class PoolIterator(AsyncIterator[T]):
    """Steps a blocking iterator on the pool. :meth:`aclose` closes the blocking iterator on the
    pool too (after any step in progress), so its ``finally`` runs even when the reader left."""

    def __init__(self, pool: UpstreamPool, items: Iterator[T]) -> None:
        self._pool = pool
        self._items = items
        self._pending: Future[tuple[bool, T | None]] | None = None
        self._finished = False

    def __aiter__(self) -> PoolIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        self._pending = self._pool._executor.submit(_step, self._items)
        try:
            done, item = await asyncio.wrap_future(self._pending)
        except asyncio.CancelledError:  # the step may still run: close() waits for it
            raise
        except BaseException:
            self._finished = True  # the iterator raised, so it is finished
            raise
        if done:
            self._finished = True
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    def close(self, then: Callable[[], None] | None = None) -> Future[None] | None:
        """Close the blocking iterator on the pool (once), after any step in progress; then call
        ``then`` there. Returns the closing's future (None if the pool is shut down)."""
        pending, self._pending = self._pending, None
        finished, self._finished = self._finished, True

        def close_after() -> None:
            try:
                if pending is not None:
                    wait_for([pending])
                closer = getattr(self._items, "close", None)
                if not finished and closer is not None:
                    closer()
            except Exception:
                log.exception("Closing a stream failed")
            finally:
                if then is not None:
                    then()

        try:
            return self._pool._executor.submit(close_after)
        except RuntimeError:  # the pool is shut down
            if then is not None:
                then()
            return None

    async def aclose(self) -> None:
        """:meth:`close`, waiting for it (shield the await if the caller is being cancelled)."""
        closing = self.close()
        if closing is not None:
            await asyncio.wrap_future(closing)


class _Held(Response):
    """A streaming response that gives its upstream slot back however it ends: sent, failed or
    abandoned by a client that went away (its body, if a :class:`PoolIterator`, is closed first)."""

    def __init__(self, inner: StreamingResponse, slot: Slot) -> None:
        self.inner = inner
        self.slot = slot
        self.status_code = inner.status_code
        self.background = inner.background
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.inner.background = self.background
        try:
            await self.inner(scope, receive, send)
        finally:
            body = self.inner.body_iterator
            if isinstance(body, PoolIterator):
                body.close(then=self.slot.release)
            else:
                self.slot.release()

