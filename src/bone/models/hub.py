"""Hugging Face Hub names: allowed when the machine is online, a clear error at once when not."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from ..errors import MissingPathError


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub's host resolves and accepts a TCP connection (and offline mode is off)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def looks_like_hub_name(name: str) -> bool:
    """'org/name' with no local file or folder of that name."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not os.path.exists(name) and not name.startswith(".")


def require_hub(name: str, what: str, local_hint: str) -> None:
    """Raise at once when `name` would need the Hub and the Hub cannot be reached."""
    if not hub_reachable():
        raise MissingPathError(
            f"{what} {name!r} is not a local path and the Hugging Face Hub cannot be reached (offline). "
            f"Download it on a connected machine and pass the local path instead: {local_hint}"
        )
