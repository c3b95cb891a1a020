"""Telling, in an instant, that the Hugging Face Hub cannot be reached, so nothing waits on retries.

Without a network, huggingface_hub and datasets retry each request with back-off, about 30 to 50 s, before they fall
back to the local cache. One TCP connection to the Hub's host, with a short timeout, tells the same thing at once;
where it fails, the Hub is read offline (from the cache), as HF_HUB_OFFLINE=1 would.
"""
import contextlib
import socket
import sys
from typing import Iterator
from urllib.parse import urlparse

from huggingface_hub import constants

__all__ = ['reachable', 'hub_reachable', 'offline_unless_reachable']


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of `url` accepts a connection within `timeout` seconds."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == 'https' else 80)),
                                      timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host (HF_ENDPOINT) accepts a connection within `timeout` seconds."""
    return reachable(constants.ENDPOINT, timeout)


@contextlib.contextmanager
def offline_unless_reachable() -> Iterator[bool]:
    """Run the block offline (huggingface_hub, and datasets if imported) when the Hub cannot be reached; yields
    whether it does."""
    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield bool(constants.HF_HUB_OFFLINE)
        return
    modules = [constants]
    if 'datasets' in sys.modules:
        modules.append(sys.modules['datasets'].config)
    saved = [m.HF_HUB_OFFLINE for m in modules]
    for m in modules:
        m.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        for m, value in zip(modules, saved):
            m.HF_HUB_OFFLINE = value
