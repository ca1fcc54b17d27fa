"""The trust store of the sender's aiohttp sessions (Graph, DynamoDB): certifi's bundle, shipped in the layer
as httpx and botocore use it, so Lambda's image and any other machine trust the same authorities."""

from __future__ import annotations

import ssl
from functools import lru_cache


@lru_cache(maxsize=1)
def context() -> ssl.SSLContext:
    import certifi

    return ssl.create_default_context(cafile=certifi.where())
