"""Fixtures shared by the site page's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A real HTTP client for the page served on loopback."""
    async with aiohttp.ClientSession() as session:
        yield session
