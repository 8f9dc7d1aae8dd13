"""The AWS instance metadata service (IMDSv2) as a source of bootstrap servers.

An nsg AMI instance carries its bootstrap document (the format of file.py) as user-data.
IMDSv2 is session-oriented (AWS EC2 user guide, "Use IMDSv2"):

    PUT /latest/api/token                X-aws-ec2-metadata-token-ttl-seconds: <1..21600>
        -> 200, body = token
    GET /latest/meta-data/instance-id    X-aws-ec2-metadata-token: <token>  -> the instance id
    GET /latest/user-data                X-aws-ec2-metadata-token: <token>  -> user-data, 404 if none

The instance id goes into the context: in the cloud it is the device's serial number.
User-data that is not an nsg bootstrap document (e.g. a cloud-init script) is not for us
and yields nothing; a document that claims to be ours but is invalid is an error.
Environment proxies are ignored on purpose: metadata must never travel through a proxy.
"""

from __future__ import annotations

import json
import logging
import re

import aiohttp

from bootstrap.sources.file import FORMAT_KEY, MAX_DOCUMENT_BYTES, parse_bootstrap_document
from bootstrap.sources.model import (
    BootstrapServer,
    DiscoveryContext,
    LocalDiscoveryError,
    RemoteProtocolError,
)

log = logging.getLogger("bootstrap.sources.imds")

DEFAULT_BASE_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
USER_DATA_PATH = "/latest/user-data"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL_S = 21600
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
MAX_TOKEN_LEN = 4096

# Tuning: the metadata service is one hop away; anything slower means there is none.
TIMEOUT_S = 2.0
TOKEN_TTL_S = 300


def looks_like_ours(data: bytes) -> bool:
    """Is this user-data meant to be an nsg bootstrap document (a JSON object with our
    format key)? Decides between "not for us" and "ours but broken"."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and FORMAT_KEY in doc


def check_instance_id(text: str) -> str:
    if not INSTANCE_ID.match(text):
        raise RemoteProtocolError(f"metadata service instance-id {text[:40]!r} is not of the form i-<hex>")
    return text


class ImdsSource:
    name = "imds"

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, timeout: float = TIMEOUT_S,
                 token_ttl: int = TOKEN_TTL_S) -> None:
        if not 1 <= token_ttl <= MAX_TOKEN_TTL_S:
            raise LocalDiscoveryError(f"IMDS token TTL {token_ttl} outside 1..{MAX_TOKEN_TTL_S}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token_ttl = token_ttl

    async def discover(self, ctx: DiscoveryContext) -> list[BootstrapServer]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
                token = await self._token(http)
                iid = await self._get(http, token, INSTANCE_ID_PATH) or b""
                ctx.instance_id = check_instance_id(iid.decode("ascii", "replace"))
                user_data = await self._get(http, token, USER_DATA_PATH, missing_ok=True)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            log.info("no metadata service at %s: %s", self.base_url, exc or type(exc).__name__)
            return []
        except aiohttp.ClientError as exc:
            raise RemoteProtocolError(f"metadata service {self.base_url}: {exc}") from None
        if user_data is None:
            log.info("instance %s has no user-data", ctx.instance_id)
            return []
        if not looks_like_ours(user_data):
            log.info("user-data of instance %s is not an nsg bootstrap document", ctx.instance_id)
            return []
        return parse_bootstrap_document(user_data, source=self.name, origin=self.base_url + USER_DATA_PATH)

    async def _token(self, http: aiohttp.ClientSession) -> str:
        async with http.put(self.base_url + TOKEN_PATH, headers={TTL_HEADER: str(self.token_ttl)},
                            allow_redirects=False) as resp:
            body = await resp.content.read(MAX_TOKEN_LEN + 1)
            if resp.status != 200:
                raise RemoteProtocolError(f"metadata service refused a session token: HTTP {resp.status}",
                                          code=resp.status)
        token = body.decode("ascii", "replace").strip()
        if not token or len(body) > MAX_TOKEN_LEN or not token.isprintable():
            raise RemoteProtocolError("metadata service sent an empty, oversized or unprintable token")
        return token

    async def _get(self, http: aiohttp.ClientSession, token: str, path: str, *,
                   missing_ok: bool = False) -> bytes | None:
        async with http.get(self.base_url + path, headers={TOKEN_HEADER: token}, allow_redirects=False) as resp:
            if resp.status == 404 and missing_ok:
                return None
            if resp.status != 200:
                raise RemoteProtocolError(f"metadata service GET {path}: HTTP {resp.status}", code=resp.status)
            body = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise RemoteProtocolError(f"metadata service GET {path}: more than {MAX_DOCUMENT_BYTES} octets")
        return body
