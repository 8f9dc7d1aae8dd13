"""The store's admin API tokens (``store.tokens``): made, listed, revoked, and checked. The table and its
migrations are controller/store_db.py's.

A token is 256 bits of randomness shown once; only its SHA-256 is kept (a fast hash is enough for a
random secret). A token may carry an expiry (UTC); after it, the API answers 401 "token expired"
(RFC 6750 section 3: error="invalid_token") instead of a bare 401, so the operator knows to make a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from controller.inputs import NotFound, StoreError, _name, _now
from controller.store_db import Database, taken

TOKEN_PREFIX = "nsgc_"
Verdict = Literal["valid", "expired", "unknown"]


def _utcnow() -> datetime:
    """The clock tokens expire by (tests replace it)."""
    return datetime.now(UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class TokenRec:
    name: str
    created: str
    expires: str | None = None  # ISO 8601, UTC; None: never


class Tokens:
    """Admin tokens; nothing else in the store reads them."""

    def __init__(self, db: Database):
        self._db = db

    def create(self, name: str, *, expires: datetime | None = None) -> str:
        """A new admin API token, valid until ``expires`` (an aware datetime; None: until revoked).
        Only its SHA-256 is kept: show the return value once."""
        name = _name(name)
        if expires is not None:
            if expires.tzinfo is None:
                raise StoreError("expires", "give the expiry with its time zone (e.g. ...+00:00)")
            if expires <= _utcnow():
                raise StoreError("expires", f"{expires.isoformat()} is not in the future")
            expires = expires.astimezone(UTC)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._db.tx(write=True) as cur:
            taken(cur, "SELECT 1 FROM tokens WHERE name = ?", (name,), "name", f"token {name!r}")
            cur.execute("INSERT INTO tokens (name, sha256, created, expires) VALUES (?, ?, ?, ?)",
                        (name, hash_token(token), _now(),
                         None if expires is None else expires.isoformat(timespec="seconds")))
        return token

    def list(self) -> list[TokenRec]:
        with self._db.tx() as cur:
            return [TokenRec(n, c, e) for n, c, e in cur.execute(
                "SELECT name, created, expires FROM tokens ORDER BY name")]

    def revoke(self, name: str) -> None:
        with self._db.tx(write=True) as cur:
            if cur.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound("name", f"no token named {name!r}")

    def verdict(self, token: str) -> Verdict:
        """Compares against every stored hash in constant time (no early exit on a match); a match
        past its expiry is "expired"."""
        digest = bytes.fromhex(hash_token(token))
        with self._db.tx() as cur:
            rows: list[tuple[str, str | None]] = cur.execute("SELECT sha256, expires FROM tokens").fetchall()
        found: tuple[bool, str | None] = (False, None)
        for h, expires in rows:
            if hmac.compare_digest(bytes.fromhex(h), digest):
                found = (True, expires)
        if not found[0]:
            return "unknown"
        if found[1] is not None and _utcnow() >= _expiry(found[1]):
            return "expired"
        return "valid"

    def check(self, token: str) -> bool:
        """Is this bearer token good now?"""
        return self.verdict(token) == "valid"


def _expiry(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
