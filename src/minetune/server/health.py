"""Health and readiness endpoints for load balancers and orchestrators.

``GET /healthz`` answers 200 while the process serves requests (liveness); ``GET /readyz`` answers
200 when the database answers too, else 503 (readiness: take the server out of rotation). Both
reveal nothing about users, need no token, and are answered whatever the Host header says, since a
load balancer probes a backend by its address (see :meth:`minetune.server.guards.Guards.check`).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from minetune.server.webutil import server_state

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    state = server_state(request)
    started = time.perf_counter()
    try:
        with state.db.transaction() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means "not ready", said in one line
        problem = " ".join(str(exc).split())[:200]
        return JSONResponse({"status": "unavailable", "database": problem}, status_code=503)
    return JSONResponse(
        {
            "status": "ready",
            "database": "ok",
            "database_ms": round((time.perf_counter() - started) * 1000, 1),
            "queue": state.settings.queue,
        }
    )
