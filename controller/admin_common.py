"""What every `nsg-controller` command that talks to a running controller shares: the API client built
from controller/cli_auth.py's token and URL, path quoting, and printing (cli_views.py's lines, tables,
the API's JSON for ``--json``). Apart from admin_cli.py so that each command group's module
(admin_workloads.py, ...) uses the same helpers without importing admin_cli.py, which imports them.
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from collections.abc import Callable
from typing import Any

from controller import cli_auth
from controller.api_client import Client, CliError
from controller.cli_views import table, to_json

# how admin_cli.py hands its command groups to the modules that add commands to them
Group = Callable[[str, str], Any]  # (name, help) -> the group's subparsers
Leaf = Callable[..., Any]  # (group, name, run, *parents, help_=...) -> the action's parser


def q(name: str) -> str:
    """One path segment: a name may hold anything, '/' included."""
    return urllib.parse.quote(name, safe="")


def make_client(args: argparse.Namespace) -> Client:
    try:
        return Client(cli_auth.resolve_url(args), cli_auth.resolve_token(args))
    except cli_auth.AuthError as exc:
        raise CliError(str(exc)) from None


def print_json(doc: object) -> None:
    print(to_json(doc))


def print_lines(lines: list[str]) -> None:
    """Lines of cli_views (each made safe there)."""
    for line in lines:
        print(line)


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    print_lines(table(rows, header))


def listing(args: argparse.Namespace, path: str, key: str) -> list[dict[str, Any]] | None:
    """GET a list; with --json print it as it came and return None."""
    doc = make_client(args).call("GET", path)
    if args.json:
        print_json(doc)
        return None
    return doc[key]


def upload(args: argparse.Namespace, path: str, api_path: str) -> Any:
    """POST the tarball at ``path`` (an image, a bundle) to ``api_path``, streamed, with time for its
    size (at least 10 MB/s: the controller verifies it on arrival); the API's answer."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - streamed by urllib, closed below
        size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    with f:
        client = make_client(args)
        client.timeout = max(client.timeout, size / (10 << 20))
        return client.call("POST", api_path, raw=f, content_type="application/x-tar")
