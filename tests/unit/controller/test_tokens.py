"""Issue 13 section 4: admin tokens may expire, and the CLI never wants one on its command line (`ps` shows
argv): it reads the token from a 0600 file its own `login` writes, or from $NSG_CONTROLLER_TOKEN."""

from __future__ import annotations

import io
import json
import sqlite3
import stat
from datetime import UTC, datetime, timedelta

import pytest

from controller import admin_cli
from controller.store import Store, StoreError
from controller.store_db import MIGRATIONS, SCHEMA_VERSION
from tests.unit.controller.test_api import cli, error_of, run, server  # noqa: F401 - server is a fixture

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        yield s


@pytest.fixture
def clock(monkeypatch):
    """The tokens' clock, set by the test."""
    now = [NOW]
    monkeypatch.setattr("controller.store_tokens._utcnow", lambda: now[0])
    return now


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A clean operator: own config dir, no token or URL in the environment."""
    cfg = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    for var in ("NSG_CONTROLLER_TOKEN", "NSG_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    return cfg / "nsg-controller"


def test_a_token_with_an_expiry_is_refused_after_it(store, clock):
    short = store.tokens.create("ci", expires=NOW + timedelta(hours=1))
    forever = store.tokens.create("admin")
    assert store.tokens.verdict(short) == "valid" and store.tokens.check(short)
    assert {t.name: t.expires for t in store.tokens.list()} == {"admin": None, "ci": "2030-01-01T13:00:00+00:00"}
    clock[0] = NOW + timedelta(hours=1, seconds=1)
    assert store.tokens.verdict(short) == "expired" and not store.tokens.check(short)
    assert store.tokens.verdict(forever) == "valid" and store.tokens.verdict("nsgc_nope") == "unknown"
    with pytest.raises(StoreError) as info:
        store.tokens.create("late", expires=NOW - timedelta(seconds=1))
    assert info.value.field == "expires"
    with pytest.raises(StoreError) as info:
        store.tokens.create("naive", expires=datetime(2031, 1, 1))  # no time zone: refused
    assert info.value.field == "expires"


def test_the_api_says_token_expired(store, clock):
    token = store.tokens.create("ci", expires=NOW + timedelta(minutes=5))

    async def scenario(client):
        headers = {"Authorization": f"Bearer {token}"}
        ok = (await client.get("/api/v1/enterprises", headers=headers)).status
        clock[0] = NOW + timedelta(minutes=6)
        resp = await client.get("/api/v1/enterprises", headers=headers)
        return ok, resp.status, resp.headers["WWW-Authenticate"], await resp.json()

    ok, status, challenge, doc = run(store, scenario)
    assert (ok, status) == (200, 401)
    assert error_of(doc) == ("unauthorized", None) and "token expired" in doc["error"]["message"]
    assert 'error="invalid_token"' in challenge  # RFC 6750 section 3


def test_a_version_3_database_keeps_its_tokens_without_expiry(tmp_path):
    from controller import store_tokens as tokens

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    for version in (1, 2, 3):
        for stmt in MIGRATIONS[version]:
            db.execute(stmt)
        db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
    db.execute("INSERT INTO tokens (name, sha256, created) VALUES ('old', ?, 'then')",
               (tokens.hash_token("nsgc_old-one"),))
    db.commit()
    db.close()
    with Store(path) as s:
        assert s.db.schema_version() == SCHEMA_VERSION
        assert s.tokens.verdict("nsgc_old-one") == "valid" and s.tokens.list()[0].expires is None


def test_token_create_takes_an_expiry(capsys, tmp_path):
    db = str(tmp_path / "c.db")
    status, out, err = cli(capsys, "token", "create", "ci", "--db", db, "--expires", "2h")
    assert status == 0 and out.strip().startswith("nsgc_") and "expires" in err
    status, out, _ = cli(capsys, "token", "create", "admin", "--db", db)
    assert status == 0
    status, out, _ = cli(capsys, "token", "list", "--db", db)
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "CREATED", "EXPIRES"]
    assert rows[0].split()[0::2] == ["admin", "never"] and rows[1].split()[0] == "ci"
    assert datetime.fromisoformat(rows[1].split()[2]) > datetime.now(UTC) + timedelta(minutes=119)
    for bad in ("soon", "0s", "-5m", "2001-01-01T00:00:00+00:00", "2031-01-01T00:00:00", "9" * 30 + "d"):
        status, _, err = cli(capsys, "token", "create", "x", "--db", db, f"--expires={bad}")
        assert status == 2 and "expires" in err, (bad, err)


def test_login_stores_the_token_0600_and_commands_use_it(server, capsys, monkeypatch, home):  # noqa: F811
    url, db = server
    token = cli(capsys, "token", "create", "admin", "--db", str(db))[1].strip()

    monkeypatch.setattr("sys.stdin", io.StringIO("nsgc_wrong\n"))
    status, _, err = cli(capsys, "login", "--url", url)
    assert status == 2 and "unauthorized" in err and not (home / "token").exists()

    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    status, out, err = cli(capsys, "login", "--url", url)
    assert status == 0 and token not in out + err
    assert (home / "token").read_text().strip() == token
    assert stat.S_IMODE((home / "token").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700

    status, out, _ = cli(capsys, "enterprise", "list", "--json")  # no --url, no --token: what login kept
    assert status == 0 and json.loads(out) == {"enterprises": []}

    other = home.parent / "elsewhere"
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert cli(capsys, "login", "--url", url, "--token-file", str(other))[0] == 0
    (home / "token").write_text("nsgc_stale\n")
    assert cli(capsys, "enterprise", "list", "--token-file", str(other))[0] == 0
    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", token)  # the environment beats the default file
    assert cli(capsys, "enterprise", "list")[0] == 0


def test_no_token_on_the_command_line(server, capsys, monkeypatch, home):  # noqa: F811
    url, db = server
    token = cli(capsys, "token", "create", "admin", "--db", str(db))[1].strip()
    with pytest.raises(SystemExit):
        admin_cli.main(["enterprise", "list", "--help"])
    helptext = capsys.readouterr().out
    assert "--token-file" in helptext and "--token " not in helptext and "--token TOKEN" not in helptext

    status, _, err = cli(capsys, "enterprise", "list", "--url", url)
    assert status == 2 and "no admin token" in err and "nsg-controller login" in err and "--token " not in err
    status, _, err = cli(capsys, "enterprise", "list", "--url", url, "--token-file", str(home / "missing"))
    assert status == 2 and "missing" in err

    status, _, err = cli(capsys, "enterprise", "list", "--url", url, "--token", token)  # old scripts still run
    assert status == 0 and "deprecated" in err and token not in err

    monkeypatch.setenv("NSG_CONTROLLER_TOKEN", "nsgc_revoked")
    status, _, err = cli(capsys, "enterprise", "list", "--url", url)
    assert status == 2 and "unauthorized" in err and "--token " not in err and "login" in err
