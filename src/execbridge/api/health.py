"""``GET /healthz`` and ``GET /readyz``: for supervisors, load balancers and the container image.

Neither needs a key (they are outside ``/v1/``) and neither says anything a stranger could use: names of
the checks, ``ok`` or not, and a short reason. ``/healthz`` answers whenever the process serves HTTP at
all. ``/readyz`` runs the probes the composition root built (``wiring.Probe``: the store, the sandbox,
the upstream's credentials) side by side, each within ``PROBE_TIMEOUT_S``, and answers 503 when any fails,
so a balancer stops sending requests that could only fail.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from execbridge.wiring import Probe, Services

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S: Final = 5.0
"""A probe slower than this counts as failed: a balancer's own check usually gives up soon after."""

_NO_STORE = {"cache-control": "no-store"}


async def healthz(request: Request) -> Response:
    return Response(orjson.dumps({"status": "ok"}), media_type="application/json", headers=_NO_STORE)


async def readyz(request: Request) -> Response:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None or request.app.state.drain.draining:  # still starting, or stopping
        status = "starting" if services is None else "draining"
        body: dict[str, Any] = {"status": status, "checks": {}}
        return Response(orjson.dumps(body), status_code=503, media_type="application/json", headers=_NO_STORE)
    results = await asyncio.gather(*(_run(probe) for probe in services.probes))
    ready = all(ok for _, ok, _ in results)
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {name: {"ok": ok, "detail": detail} for name, ok, detail in results},
    }
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json", headers=_NO_STORE
    )


async def _run(probe: Probe) -> tuple[str, bool, str]:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            return probe.name, True, await probe.check()
    except TimeoutError:
        return probe.name, False, f"no answer within {PROBE_TIMEOUT_S:g} s"
    except Exception as exc:  # a probe's failure is its answer, never a 500
        log.warning("readiness probe %s failed: %s", probe.name, exc)
        return probe.name, False, _reason(exc)


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return message.splitlines()[0][:200]
