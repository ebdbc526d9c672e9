"""``/hooks/{channel}``: receivers that keep what is posted, so notifications can be read back.

``PUT /hooks/{channel}/fault`` is a stand-in for a failing receiver (no real chat or pager
service offers one): ``{"status": 500, "count": 2}`` makes the next 2 posts to the channel
answer 500 and keep nothing. ``DELETE /hooks/{channel}`` forgets the messages and the fault.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

HOOK_MESSAGES_KEPT = 500

router = APIRouter()
_hooks: dict[str, deque[Any]] = defaultdict(lambda: deque(maxlen=HOOK_MESSAGES_KEPT))
_faults: dict[str, Fault] = {}
_lock = threading.Lock()


class Fault(BaseModel):
    """Answer ``status`` to the next ``count`` posts, keeping nothing."""

    status: int = Field(default=500, ge=400, le=599)
    count: int = Field(default=1, ge=1)


@router.post("/hooks/{channel}")
async def keep(channel: str, request: Request) -> JSONResponse:
    """Keep the posted body (JSON when it parses, else text), the last 500 per channel; while
    a fault is set, answer its status instead."""
    body = await request.body()
    try:
        message: Any = json.loads(body)
    except ValueError:
        message = body.decode(errors="replace")
    with _lock:
        fault = _faults.get(channel)
        if fault is not None:
            fault.count -= 1
            if fault.count == 0:
                del _faults[channel]
            return JSONResponse({"kept": False, "fault": True}, status_code=fault.status)
        _hooks[channel].append(message)
    return JSONResponse({"kept": True})


@router.get("/hooks/{channel}")
def show(channel: str) -> JSONResponse:
    """Everything kept for ``channel``, oldest first."""
    with _lock:
        return JSONResponse(list(_hooks.get(channel, ())))


@router.put("/hooks/{channel}/fault")
def set_fault(channel: str, fault: Fault) -> JSONResponse:
    """Make the next ``fault.count`` posts to ``channel`` fail with ``fault.status``."""
    with _lock:
        _faults[channel] = fault
    return JSONResponse(fault.model_dump())


@router.delete("/hooks/{channel}")
def forget(channel: str) -> JSONResponse:
    """Forget what ``channel`` kept, and any fault set on it."""
    with _lock:
        _hooks.pop(channel, None)
        _faults.pop(channel, None)
    return JSONResponse({"forgotten": True})
