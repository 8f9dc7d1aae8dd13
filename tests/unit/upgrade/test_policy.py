"""Versions, manifests and which bundles a box may install (pure tables)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from nsg.upgrade.errors import BundleRefused, PolicyRefused
from nsg.upgrade.manifest import Manifest, ReleaseInfo, Rootfs, Version, parse_manifest
from nsg.upgrade.policy import check

from .conftest import MODEL


@pytest.mark.parametrize("order", [
    ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
     "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0"],  # semver.org 11.4's example, and more
])
def test_versions_order_like_semver(order):
    versions = [Version(v) for v in order]
    assert sorted(reversed(versions)) == versions
    assert all(a < b for a, b in itertools.pairwise(versions))


def test_build_metadata_does_not_order():
    assert Version("1.2.3+g1a2b") == Version("1.2.3+g9f9f") == Version("1.2.3")


@pytest.mark.parametrize("bad", ["1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.2.3-", "1.2.3-01", ""])
def test_versions_that_are_not(bad):
    with pytest.raises(ValueError, match=r"not MAJOR.MINOR.PATCH"):
        Version(bad)


def manifest(version: str, min_version: str = "1.0.0", model: str = MODEL) -> Manifest:
    return Manifest(model=model, version=version, min_version=min_version, created=datetime(2025, 1, 1, tzinfo=UTC),
                    rootfs=Rootfs(size=1, sha256="0" * 64))


RUNNING = ReleaseInfo(model=MODEL, version="1.4.0", min_version="1.2.0")


@pytest.mark.parametrize(("bundle", "allow", "outcome"), [
    (manifest("1.5.0"), False, "upgrade 1.4.0 -> 1.5.0"),
    (manifest("1.5.0", "1.4.0"), False, "upgrade 1.4.0 -> 1.5.0"),
    (manifest("2.0.0", "1.5.0"), False, "too-old-to-upgrade"),  # needs an intermediate release
    (manifest("1.4.0"), False, "downgrade"),  # the same version is not an upgrade
    (manifest("1.4.0"), True, "reinstall 1.4.0 -> 1.4.0"),
    (manifest("1.3.0"), False, "downgrade"),
    (manifest("1.3.0"), True, "downgrade 1.4.0 -> 1.3.0"),
    (manifest("1.2.0"), True, "downgrade 1.4.0 -> 1.2.0"),  # down to the floor, inclusive
    (manifest("1.1.9"), False, "below-min-version"),
    (manifest("1.1.9"), True, "below-min-version"),  # the flag does not lower the floor
    (manifest("1.4.0-rc.1"), True, "downgrade 1.4.0 -> 1.4.0-rc.1"),
    (manifest("1.5.0", model="nsg-other-arm64"), True, "wrong-model"),
])
def test_policy(bundle, allow, outcome):
    if " " in outcome:
        assert check(bundle, RUNNING, allow_downgrade=allow) == outcome
    else:
        with pytest.raises(PolicyRefused) as err:
            check(bundle, RUNNING, allow_downgrade=allow)
        assert err.value.code == outcome and err.value.fault == "policy"


def test_refusals_name_what_was_wrong():
    with pytest.raises(PolicyRefused, match=r"bundle is for model nsg-other-arm64, this box is nsg-atom-x86_64"):
        check(manifest("1.5.0", model="nsg-other-arm64"), RUNNING)
    with pytest.raises(PolicyRefused, match=r"older than 1.2.0, the oldest version the running release 1.4.0 allows"):
        check(manifest("1.1.0"), RUNNING, allow_downgrade=True)


def test_min_version_above_version_is_invalid():
    with pytest.raises(ValidationError, match=r"min_version 1.6.0 is newer than version 1.5.0"):
        manifest("1.5.0", "1.6.0")


@pytest.mark.parametrize(("raw", "code", "why"), [
    (b"{", "bad-manifest", "not JSON"),
    (b'{"format": 2}', "format-unsupported", "format 2 is newer than this box reads"),
    (manifest("1.5.0").to_json().replace(b'"model"', b'"modle"'), "bad-manifest", "model"),
    (manifest("1.5.0").to_json().replace(b"00:00Z", b"00:00"), "bad-manifest", "created"),  # a time needs its zone
])
def test_manifest_parsing_refusals(raw, code, why):
    with pytest.raises(BundleRefused, match=why) as err:
        parse_manifest(raw)
    assert err.value.code == code


def test_manifest_round_trip():
    m = manifest("1.5.0")
    assert parse_manifest(m.to_json()) == m
