"""The Hugging Face hub as a network service: whether it can be reached now, so that a command offline
fails in one line (or falls back to the packaged towers) instead of after the hub client's retries."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

ENDPOINT = "https://huggingface.co"


@functools.cache
def reachable() -> bool:
    """True unless HF_HUB_OFFLINE is set or the hub's host ($HF_ENDPOINT's) cannot be reached within 3 seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", ENDPOINT))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=3).close()
    except OSError:
        return False
    return True
