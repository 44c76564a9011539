"""Is the Hugging Face hub reachable? One cheap probe per process, shared by models, tokenizers and data.

The HF libraries retry for about a minute when DNS fails; probing once with a short timeout and then
switching them to offline mode turns that minute into one clear line.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from urllib.parse import urlparse

_HUB_STATE: dict[str, bool] = {}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def go_offline() -> None:
    """Put huggingface_hub/datasets/transformers in offline mode so they fail at once instead of
    retrying for a minute (their default when DNS fails)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    if "huggingface_hub" in sys.modules:  # the libraries read these at import time
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        import datasets.config as ds_config

        ds_config.HF_HUB_OFFLINE = True
        ds_config.HF_DATASETS_OFFLINE = True


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when a TCP connection to the hub endpoint opens within `timeout` seconds (checked once per
    process; offline env vars short-cut it). When False, the HF libraries are switched to offline mode."""
    if "reachable" in _HUB_STATE:
        return _HUB_STATE["reachable"]
    if any(_truthy(v) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")):
        ok = False
    else:
        url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
        result: list[bool] = []

        def probe() -> None:  # in a thread because getaddrinfo ignores socket timeouts
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout + 0.5)
        ok = bool(result and result[0])
    _HUB_STATE["reachable"] = ok
    if not ok:
        go_offline()
    return ok
