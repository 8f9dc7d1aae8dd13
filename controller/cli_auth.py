"""Where `nsg-controller` finds the controller and its admin token, and the `login` that keeps them.

A token never goes on a command line: every user of the machine reads other users' argv (`ps`,
/proc/PID/cmdline). `nsg-controller login --url URL` reads the token from stdin (or prompts without
echo), checks it against the controller and keeps it in a 0600 file in a 0700 directory,
``$XDG_CONFIG_HOME/nsg-controller/token`` (``~/.config/...`` by default), with the URL beside it.

The token used is the first of: ``--token-file FILE``, ``$NSG_CONTROLLER_TOKEN``, the file `login`
wrote. The URL: ``--url``, ``$NSG_CONTROLLER_URL``, the URL `login` kept, http://127.0.0.1:8443.
``--token TOKEN`` still works for old scripts, hidden from the help and with a warning.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8443"
TOKEN_ENV, URL_ENV = "NSG_CONTROLLER_TOKEN", "NSG_CONTROLLER_URL"
NO_TOKEN_HINT = ("run `nsg-controller login --url URL` (it reads the token from stdin) or set "
                 f"${TOKEN_ENV}; `nsg-controller token create` makes a token")
REFUSED_HINT = f"`nsg-controller login` with a valid token, or set ${TOKEN_ENV}"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class AuthError(Exception):
    """The operator's to fix: no token, an unreadable token file, a bad --expires."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nsg-controller"


def default_token_file() -> Path:
    return config_dir() / "token"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options every command that talks to the API takes."""
    p.add_argument("--url", help=f"controller API base (default: ${URL_ENV}, the URL `login` kept, or {DEFAULT_URL})")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help=f"file whose first line is the admin token (default: ${TOKEN_ENV}, or the file "
                        "`nsg-controller login` wrote)")
    p.add_argument("--token", help=argparse.SUPPRESS)  # deprecated: visible in `ps`


def _read_first_line(path: Path, what: str) -> str:
    try:
        with path.open() as f:
            mode = os.fstat(f.fileno()).st_mode
            line = f.readline().strip()
    except OSError as exc:
        raise AuthError(f"{what} {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        print(f"nsg-controller: warning: {path} can be read by other users; chmod 600 it", file=sys.stderr)
    if not line:
        raise AuthError(f"{what} {path}: the first line is empty")
    return line


def resolve_token(args: argparse.Namespace) -> str:
    if getattr(args, "token", None):
        print("nsg-controller: warning: --token is deprecated: every user sees a command line (ps); use "
              f"`nsg-controller login`, --token-file or ${TOKEN_ENV}", file=sys.stderr)
        return args.token
    if getattr(args, "token_file", None) is not None:
        return _read_first_line(args.token_file, "--token-file")
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = default_token_file()
    if path.exists():
        return _read_first_line(path, "token file")
    raise AuthError(f"no admin token: {NO_TOKEN_HINT}")


def resolve_url(args: argparse.Namespace) -> str:
    if getattr(args, "url", None):
        return args.url
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    kept = config_dir() / "url"
    if kept.exists():
        try:
            return kept.read_text().strip() or DEFAULT_URL
        except OSError as exc:
            raise AuthError(f"{kept}: {exc.strerror}") from None
    return DEFAULT_URL


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, mode 0600 from its first byte, replacing it whole (a new directory: 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_token_input(prompt: str = "admin token: ") -> str:
    """The token from stdin: one line from a pipe or file, or typed at a prompt that does not echo."""
    token = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline()
    token = token.strip()
    if not token:
        raise AuthError("no token on stdin (pipe it in, or type it at the prompt)")
    return token


def login(args: argparse.Namespace, check: Any) -> None:
    """`nsg-controller login`: ``check(url, token)`` must accept the token before it is kept."""
    url = resolve_url(args)
    token = read_token_input()
    check(url, token)
    path = args.token_file or default_token_file()
    write_private(path, token + "\n")
    write_private(config_dir() / "url", url + "\n")
    print(f"nsg-controller: the token for {url} is kept in {path} (mode 0600)", file=sys.stderr)


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``--expires``: a duration (``90m``, ``12h``, ``30d``, ``2w``) or an ISO 8601 time with its zone."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        try:
            delta = timedelta(**{_UNITS[m[2]]: int(m[1])})
            if delta <= timedelta(0):
                raise AuthError(f"--expires {text}: give a positive duration")
            return now + delta
        except OverflowError:
            raise AuthError(f"--expires {text}: too far in the future") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AuthError(f"--expires {text!r}: give a duration like 90m, 12h, 30d, 2w or an ISO 8601 time "
                        "like 2030-01-31T18:00:00+00:00") from None
    if when.tzinfo is None:
        raise AuthError(f"--expires {text}: give the time zone too (e.g. +00:00 or Z)")
    if when <= now:
        raise AuthError(f"--expires {text}: that is not in the future")
    return when
