"""The store's record of device certificates (``store.certificates``): every LDevID the CA issued (by
certificate serial number, for which device serial, until when) and which were revoked. Revoking means:
the certificate is listed in the CA's revocation list, which every gateway of an "ldevid" enterprise gets
with its config and checks in IKE_AUTH; the controller's own device site refuses it too.

A box holds one identity: a first enrollment is recorded only while it holds no valid certificate
(record_issued(first=True)), so a copied IDevID cannot mint a second LDevID for the same box.
Expired certificates drop off the list (RFC 5280 section 3.3: a CRL need not list what expired).

This part knows device serials, not gateway names. A gateway's certificates are revoked by the gateways'
owner (controller/store_gateways.py) calling ``revoke_device`` inside its own transaction: when the
gateway is deleted, its serial changes (the box was replaced) or the operator resets its identity
(``Gateways.reset_identity``: the box lost its state and must enroll anew). A new list bumps every esp
enterprise's generation (its configs carry the list); the rendered configs read it with ``crl_pem``.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable, Iterable

from controller.store_db import Database, put_setting, setting

CRL_SETTING = "crl_pem"

# (certificate serial number, revocation time) -> CRL PEM signed by the CA (the device services set it)
CrlSigner = Callable[[Iterable[tuple[int, datetime.datetime]]], bytes]


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


class Certificates:
    """Issued certificates and the revocation list (settings row ``crl_pem``)."""

    def __init__(self, db: Database, crl_signer: CrlSigner | None = None):
        self._db = db
        self.crl_signer = crl_signer  # None: nobody can sign here (a CLI on the database)

    def record_issued(self, device_serial: str, cert_serial: int, not_after: datetime.datetime, *,
                      first: bool = False) -> bool:
        """Record an issued certificate. ``first`` (a first enrollment): only if the device holds no
        valid certificate, checked in the same transaction; False, and nothing recorded, otherwise."""
        with self._db.tx(write=True) as cur:
            if first and _held(cur, device_serial, datetime.datetime.now(datetime.UTC)):
                return False
            cur.execute("INSERT OR REPLACE INTO certificates (cert_serial, device_serial, not_after, issued) "
                        "VALUES (?, ?, ?, ?)", (f"{cert_serial:x}", device_serial, not_after.isoformat(),
                                                 datetime.datetime.now(datetime.UTC).isoformat()))
        return True

    def holds_identity(self, device_serial: str) -> bool:
        """Does the store record a valid (unexpired, unrevoked) certificate for this device?"""
        with self._db.tx() as cur:
            return bool(_held(cur, device_serial, datetime.datetime.now(datetime.UTC)))

    def is_revoked(self, cert_serial: int) -> bool:
        with self._db.tx() as cur:
            row = cur.execute("SELECT revoked FROM certificates WHERE cert_serial = ?",
                              (f"{cert_serial:x}",)).fetchone()
        return row is not None and row[0] is not None

    def list(self, device_serial: str) -> list[dict]:
        """What was issued for one device, newest first (for the API and the CLI)."""
        with self._db.tx() as cur:
            rows = cur.execute("SELECT cert_serial, not_after, issued, revoked, reason FROM certificates "
                               "WHERE device_serial = ? ORDER BY issued DESC", (device_serial,)).fetchall()
        return [{"serial": s, "not_after": na, "issued": i, "revoked": r, "reason": why} for s, na, i, r, why in rows]

    def revoke_device(self, cur: sqlite3.Cursor, device_serial: str, reason: str) -> list[str]:
        """Inside the caller's write transaction: revoke every unexpired, unrevoked certificate of
        ``device_serial`` and publish the new list. Returns their serial numbers (hex), oldest first."""
        now = datetime.datetime.now(datetime.UTC)
        held = _held(cur, device_serial, now)
        if held:
            cur.execute("UPDATE certificates SET revoked = ?, reason = ? WHERE device_serial = ? AND revoked IS NULL "
                        "AND not_after > ?", (now.isoformat(), reason, device_serial, now.isoformat()))
            self._publish(cur, now)
        return held

    def _publish(self, cur: sqlite3.Cursor, now: datetime.datetime) -> bool:
        """Keep the signed list in step with the records (nothing while none is revoked); True if it
        changed. Every esp enterprise's configs carry it, so each gets a new generation to push."""
        listed = [(int(s, 16), _utc(r)) for s, r in cur.execute(
            "SELECT cert_serial, revoked FROM certificates WHERE revoked IS NOT NULL AND not_after > ? "
            "ORDER BY cert_serial", (now.isoformat(),))]
        old = setting(cur, CRL_SETTING)
        if old is not None and listed and _entries(old) == {s for s, _ in listed}:
            return False
        if not listed:
            if old is None:
                return False
            cur.execute("DELETE FROM settings WHERE key = ?", (CRL_SETTING,))
        elif self.crl_signer is None:
            return False  # nobody can sign here (a CLI on the database): the device services will at start
        else:
            put_setting(cur, CRL_SETTING, self.crl_signer(listed).decode())
        cur.execute("UPDATE enterprises SET generation = generation + 1 WHERE transport = 'esp'")
        return True

    def refresh_crl(self) -> bool:
        """Publish what was revoked while nobody could sign, drop what expired (the device services at
        start, and now and then)."""
        with self._db.tx(write=True) as cur:
            return self._publish(cur, datetime.datetime.now(datetime.UTC))


def _held(cur: sqlite3.Cursor, device_serial: str, now: datetime.datetime) -> list[str]:
    """The device's valid (unexpired, unrevoked) certificates, oldest first."""
    return [r[0] for r in cur.execute(
        "SELECT cert_serial FROM certificates WHERE device_serial = ? AND revoked IS NULL AND not_after > ? "
        "ORDER BY issued", (device_serial, now.isoformat()))]


def crl_pem(cur: sqlite3.Cursor) -> str | None:
    """The signed revocation list as the configs carry it (None: nothing revoked, or not yet signed)."""
    return setting(cur, CRL_SETTING)


def _entries(pem: str) -> set[int]:
    from cryptography import x509

    try:
        return {r.serial_number for r in x509.load_pem_x509_crl(pem.encode())}
    except ValueError:
        return set()
