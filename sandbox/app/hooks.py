"""``/hooks/{channel}``: receivers that keep what is posted, so notifications can be read back."""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

HOOK_MESSAGES_KEPT = 500

router = APIRouter()
_hooks: dict[str, deque[Any]] = defaultdict(lambda: deque(maxlen=HOOK_MESSAGES_KEPT))
_lock = threading.Lock()


@router.post("/hooks/{channel}")
async def keep(channel: str, request: Request) -> JSONResponse:
    """Keep the posted body (JSON when it parses, else text), the last 500 per channel."""
    body = await request.body()
    try:
        message: Any = json.loads(body)
    except ValueError:
        message = body.decode(errors="replace")
    with _lock:
        _hooks[channel].append(message)
    return JSONResponse({"kept": True})


@router.get("/hooks/{channel}")
def show(channel: str) -> JSONResponse:
    """Everything kept for ``channel``, oldest first."""
    with _lock:
        return JSONResponse(list(_hooks.get(channel, ())))


@router.delete("/hooks/{channel}")
def forget(channel: str) -> JSONResponse:
    """Forget what ``channel`` kept."""
    with _lock:
        _hooks.pop(channel, None)
    return JSONResponse({"forgotten": True})
