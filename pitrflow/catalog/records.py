"""Sealed records: small self-checksummed JSON documents, the repository's only catalog.

Every record (a backup manifest, a ship mark, a drill or verify result, a SQL
Server backup set) carries a SHA-256 over its own canonical JSON, so a reader
rejects one that was truncated or edited by hand.  Both engines seal their
records here, so every engine's records fail the same way in the same words.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pitrflow.errors import RepositoryError

FORMAT = 1


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def seal(kind: str, body: dict[str, Any], fmt: int = FORMAT) -> bytes:
    doc = {"format": fmt, "kind": kind, **body}
    doc["checksum"] = hashlib.sha256(_canonical(doc)).hexdigest()
    return json.dumps(doc, sort_keys=True, indent=1, default=str).encode()


def unseal(kind: str, data: bytes, key: str, formats: tuple[int, ...] = (FORMAT,)
           ) -> dict[str, Any]:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise TypeError(kind)
        recorded = doc.pop("checksum")
    except (ValueError, KeyError, AttributeError, TypeError):
        raise RepositoryError(f"{key} is not a valid pitrflow {kind}",
                              "it may be damaged; run pitr verify") from None
    if hashlib.sha256(_canonical(doc)).hexdigest() != recorded:
        raise RepositoryError(f"{key} fails its own checksum",
                              "it was damaged or edited; run pitr verify")
    if doc.get("kind") != kind or doc.get("format") not in formats:
        wanted = "/".join(str(f) for f in formats)
        raise RepositoryError(f"{key} is not a format-{wanted} {kind}",
                              "was it written by a newer pitrflow?")
    return doc


def dump_record(kind: str, body: dict[str, Any]) -> bytes:
    """Seal a small record (drill results, verify results, SQL Server backup sets)."""
    return seal(kind, body)


def load_record(kind: str, data: bytes, key: str) -> dict[str, Any]:
    return unseal(kind, data, key)
