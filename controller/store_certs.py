"""The store's record of device certificates: every LDevID the CA issued (by certificate serial number,
for which device serial, until when) and which were revoked. Revoking means: the certificate is listed
in the CA's revocation list, which every gateway of an "ldevid" enterprise gets with its config and
checks in IKE_AUTH; the controller's own device site refuses it too.

A gateway's certificates are revoked when it is deleted, its serial changes (the box was replaced) or
the operator resets its identity (reset_identity: the box lost its state and must enroll anew).
A box holds one identity: a first enrollment is recorded only while it holds no valid certificate
(record_issued(first=True)), so a copied IDevID cannot mint a second LDevID for the same box.
Expired certificates drop off the list (RFC 5280 section 3.3: a CRL need not list what expired).
A mixin of controller.store.Store (its transactions, settings and gateway lookups)."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable, Iterable

MIGRATION = (
    """CREATE TABLE certificates (cert_serial TEXT PRIMARY KEY, device_serial TEXT NOT NULL,
        not_after TEXT NOT NULL, issued TEXT NOT NULL, revoked TEXT, reason TEXT)""",
    "CREATE INDEX certificates_by_device ON certificates (device_serial)",
)
CRL_SETTING = "crl_pem"

# (certificate serial number, revocation time) -> CRL PEM signed by the CA (the device services set it)
CrlSigner = Callable[[Iterable[tuple[int, datetime.datetime]]], bytes]


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


class CertificateRecords:
    """Uses the store's ``_tx``, ``_setting`` and ``_set``."""

    crl_signer: CrlSigner | None = None

    def record_issued(self, device_serial: str, cert_serial: int, not_after: datetime.datetime, *,
                      first: bool = False) -> bool:
        """Record an issued certificate. ``first`` (a first enrollment): only if the device holds no
        valid certificate, checked in the same transaction; False, and nothing recorded, otherwise."""
        with self._tx(write=True) as cur:
            if first and self._held(cur, device_serial):
                return False
            cur.execute("INSERT OR REPLACE INTO certificates (cert_serial, device_serial, not_after, issued) "
                        "VALUES (?, ?, ?, ?)", (f"{cert_serial:x}", device_serial, not_after.isoformat(),
                                                 datetime.datetime.now(datetime.UTC).isoformat()))
        return True

    @staticmethod
    def _held(cur: sqlite3.Cursor, device_serial: str) -> list[str]:
        now = datetime.datetime.now(datetime.UTC).isoformat()
        return [r[0] for r in cur.execute(
            "SELECT cert_serial FROM certificates WHERE device_serial = ? AND revoked IS NULL AND not_after > ? "
            "ORDER BY issued", (device_serial, now))]

    def holds_identity(self, device_serial: str) -> bool:
        """Does the store record a valid (unexpired, unrevoked) certificate for this device?"""
        with self._tx() as cur:
            return bool(self._held(cur, device_serial))

    def reset_identity(self, gateway: str) -> tuple[str, list[str]]:
        """The operator's reset of a box's identity: revoke its valid certificates (the new revocation
        list goes to gateways with their configs), so that it may enroll once more with its IDevID.
        Returns its serial and the serial numbers (hex) of what was revoked."""
        with self._tx(write=True) as cur:
            serial = self._gateway(cur, self._gateway_id(cur, gateway)[0]).serial
            held = self._held(cur, serial)
            self._revoke_device(cur, serial, "identity reset by the operator")
        return serial, held

    def is_revoked(self, cert_serial: int) -> bool:
        with self._tx() as cur:
            row = cur.execute("SELECT revoked FROM certificates WHERE cert_serial = ?",
                              (f"{cert_serial:x}",)).fetchone()
        return row is not None and row[0] is not None

    def certificates(self, device_serial: str) -> list[dict]:
        """What was issued for one device, newest first (for the API and the CLI)."""
        with self._tx() as cur:
            rows = cur.execute("SELECT cert_serial, not_after, issued, revoked, reason FROM certificates "
                               "WHERE device_serial = ? ORDER BY issued DESC", (device_serial,)).fetchall()
        return [{"serial": s, "not_after": na, "issued": i, "revoked": r, "reason": why} for s, na, i, r, why in rows]

    def _revoke_device(self, cur: sqlite3.Cursor, device_serial: str, reason: str) -> int:
        """Revoke every unexpired, unrevoked certificate of ``device_serial``; publish the new list."""
        now = datetime.datetime.now(datetime.UTC)
        n = cur.execute("UPDATE certificates SET revoked = ?, reason = ? WHERE device_serial = ? AND revoked IS NULL "
                        "AND not_after > ?", (now.isoformat(), reason, device_serial, now.isoformat())).rowcount
        if n:
            self._publish(cur, now)
        return n

    def _publish(self, cur: sqlite3.Cursor, now: datetime.datetime) -> bool:
        """Keep the signed list in step with the records (nothing while none is revoked); True if it
        changed. Every esp enterprise's configs carry it, so each gets a new generation to push."""
        listed = [(int(s, 16), _utc(r)) for s, r in cur.execute(
            "SELECT cert_serial, revoked FROM certificates WHERE revoked IS NOT NULL AND not_after > ? "
            "ORDER BY cert_serial", (now.isoformat(),))]
        old = self._setting(cur, CRL_SETTING)
        if old is not None and listed and _entries(old) == {s for s, _ in listed}:
            return False
        if not listed:
            if old is None:
                return False
            cur.execute("DELETE FROM settings WHERE key = ?", (CRL_SETTING,))
        elif self.crl_signer is None:
            return False  # nobody can sign here (a CLI on the database): the device services will at start
        else:
            self._set(cur, CRL_SETTING, self.crl_signer(listed).decode())
        cur.execute("UPDATE enterprises SET generation = generation + 1 WHERE transport = 'esp'")
        return True

    def refresh_crl(self) -> bool:
        """Publish what was revoked while nobody could sign, drop what expired (the device services at
        start, and now and then)."""
        with self._tx(write=True) as cur:
            return self._publish(cur, datetime.datetime.now(datetime.UTC))

    def _crl(self, cur: sqlite3.Cursor) -> str | None:
        return self._setting(cur, CRL_SETTING)


def _entries(pem: str) -> set[int]:
    from cryptography import x509

    try:
        return {r.serial_number for r in x509.load_pem_x509_crl(pem.encode())}
    except ValueError:
        return set()
