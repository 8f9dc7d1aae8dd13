"""The `apps` section of the gateway config: what is refused, with the field named; how an app
becomes a container spec (bridge, address with the subnet's prefix, gateway, tenant MTU)."""

from __future__ import annotations

import pytest

from nsg.app_supervisor import specs
from nsg.model import ConfigError, parse_config
from tests.unit.conftest import base_doc

WEB = {"name": "web", "image": "acme/web:1", "subnet": "corp", "address": "198.19.0.50"}


def doc_with(*apps: dict) -> dict:
    d = base_doc()
    d["apps"] = list(apps)
    return d


@pytest.mark.parametrize(("app", "problem"), [
    ({**WEB, "subnet": "nope"}, "apps[0].subnet: no subnet named 'nope'"),
    ({**WEB, "address": "198.19.0.1"}, "is not a host address of 198.19.0.0/24"),
    ({**WEB, "address": "203.0.113.5"}, "is not a host address"),
    ({**WEB, "name": "Web!"}, "apps[0].name"),
    ({**WEB, "image": "bad image"}, "apps[0].image"),
    ({**WEB, "env": {"1BAD": "x"}}, "apps[0].env"),
    ({**WEB, "memory_mb": 0}, "apps[0].memory_mb"),
    ({**WEB, "image_source": {"url": "http://198.51.100.7/x.tar", "sha256": "0" * 64}}, "apps[0].image_source.url"),
    ({**WEB, "image_source": {"url": "file:///x.tar", "sha256": "xyz"}}, "apps[0].image_source.sha256"),
])
def test_bad_apps_are_refused_naming_the_field(app, problem):
    with pytest.raises(ConfigError) as exc:
        parse_config(doc_with(app))
    assert problem in str(exc.value)


def test_two_apps_on_one_address_are_refused():
    with pytest.raises(ConfigError, match="address"):
        parse_config(doc_with(WEB, {**WEB, "name": "db"}))


def test_an_app_becomes_a_container_spec():
    cfg = parse_config(doc_with({**WEB, "env": {"B": "2", "A": "1"}, "memory_mb": 64,
                                 "image_source": {"url": "file:///srv/web.tar", "sha256": "a" * 64}}))
    (s,) = specs(cfg, 1388).values()
    assert (s.bridge, s.address, s.gateway, s.mtu) == ("br-100", "198.19.0.50/24", "198.19.0.1", 1388)
    assert s.env == (("A", "1"), ("B", "2")) and s.memory_mb == 64
    assert (s.image_url, s.image_sha256) == ("file:///srv/web.tar", "a" * 64)
