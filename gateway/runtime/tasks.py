"""Stopping tasks that may not want to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

log = logging.getLogger("gateway")

CANCEL_RETRY_S = 1.0


async def cancel_and_wait(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel and wait. A cancel can be swallowed inside a library's `asyncio.wait_for` on
    Python 3.11 (seen with pymodbus), so a task still running after `CANCEL_RETRY_S` is
    cancelled again, until it ends: a stop never hangs on one device. Exceptions of the
    tasks are left to whoever owns them (their task group)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        for task in pending:
            log.warning("Task `%s` ignored a cancel; cancelling it again.", task.get_name())
