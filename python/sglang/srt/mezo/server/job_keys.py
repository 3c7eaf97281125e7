"""A job's own key: what a client of a job with an external grader shows to read the job's rollouts,
post their rewards and sample its perturbed adapters, beside the server's ``--api-key`` (which every
client of the server shares). Issued once, in the job's creation answer (``job_key``); the store
keeps only its SHA-256. Sent as the ``X-Job-Key`` header.

>>> key = new_job_key()
>>> key.startswith("jk-") and matches(key, {"job_key_sha256": key_hash(key)})
True
>>> matches(None, {"job_key_sha256": key_hash(key)}), matches("jk-other", {"job_key_sha256": key_hash(key)})
(False, False)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Mapping, Optional

#: The request header that carries a job's key.
HEADER = "X-Job-Key"


def new_job_key() -> str:
    """A fresh key (192 random bits)."""
    return "jk-" + secrets.token_urlsafe(24)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: Optional[str], request: Mapping) -> bool:
    """Whether ``key`` (the header's value, None when absent) is job ``request``'s own key."""
    expected = request.get("job_key_sha256")
    if not key or not isinstance(expected, str):
        return False
    return hmac.compare_digest(key_hash(key), expected)
