"""The one error of the vibration family: input that cannot be diagnosed honestly.

It extends the gateway's error tree (gateway/core/errors.py) locally, because only the vibration
family and its `analyze` command raise it: a NaN, a clipped or flat signal, a block too short, a
sample rate or speed that puts the bearing frequencies out of reach, a file without a channel we
recognise. The message names the problem; no diagnosis is invented.
"""

from __future__ import annotations

from gateway.core.errors import GatewayError


class BadSignal(GatewayError):
    """The recording or block cannot be diagnosed; the message says why."""
