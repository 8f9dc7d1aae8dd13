import copy
import json

import pytest

from nsg.model import ConfigError, load_config, parse_config


def test_valid_config_parses(doc):
    cfg = parse_config(doc)
    assert cfg.subnets[0].vni == 100
    assert str(cfg.peers[0].system_ip) == "198.19.255.2"
    with pytest.raises(Exception, match="frozen"):
        cfg.subnets[0].vni = 5  # type: ignore[misc]


def _mutate(doc, path, value):
    d = copy.deepcopy(doc)
    cur = d
    for p in path[:-1]:
        cur = cur[p]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


BAD = [
    # (path, value, expected text in the error)
    (("bogus",), 1, "bogus: Extra inputs are not permitted"),
    (("subnets", 0, "colour"), "red", "subnets[0].colour: Extra inputs"),
    (("subnets", 0, "vni"), 16777216, "subnets[0].vni: Input should be less than or equal to 16777215"),
    (("subnets", 0, "vni"), 0, "subnets[0].vni: Input should be greater than or equal to 1"),
    (("subnets", 0, "cidr"), "198.19.0.1/24", "subnets[0].cidr"),
    (("subnets", 0, "gateway"), "198.19.1.1", "subnets[0]: gateway 198.19.1.1 is not a host address"),
    (("subnets", 0, "ports"), ["lan0", "lan0"], "ports lists an interface twice"),
    (("subnets", 0, "ports"), ["wan0"], "port wan0 is an uplink"),
    (("subnets", 0, "ports"), ["this-name-is-too-long"], "subnets[0].ports[0]: not a valid interface name"),
    (("system_ip",), "198.19.0.5", "system_ip 198.19.0.5 lies inside subnet 'corp'"),
    (("system_ip",), "300.1.1.1", "system_ip: "),
    (("schema_version",), 2, "schema_version: Input should be 1"),
    (("uplinks", 0, "gateway"), "198.18.9.1", "uplinks[0]: gateway 198.18.9.1 is not another host"),
    (("uplinks", 0, "address"), KeyError, "needs both 'address' and 'gateway'"),
    (("uplinks", 0, "mode"), "pppoe", "uplinks[0].mode: Input should be 'static' or 'dhcp'"),
    (("uplinks", 0, "mtu"), 100, "uplinks[0].mtu"),
    (("uplinks",), [], "uplinks: Tuple should have at least 1 item"),
    (("peers", 0, "system_ip"), "198.19.255.1", "peer 'b2' has this gateway's own system_ip"),
    (("peers", 0, "endpoint"), "224.0.0.1", "endpoint 224.0.0.1 is not a unicast"),
    (("peers", 0, "name"), "B 2", "peers[0].name: names are"),
]


@pytest.mark.parametrize(("path", "value", "expect"), BAD)
def test_bad_config_names_the_field(doc, path, value, expect):
    with pytest.raises(ConfigError) as ei:
        parse_config(_mutate(doc, path, value))
    assert expect in str(ei.value), str(ei.value)


def test_overlapping_subnets_rejected(doc):
    doc["subnets"].append({"name": "guest", "vni": 200, "cidr": "198.19.0.128/25", "gateway": "198.19.0.129"})
    with pytest.raises(ConfigError, match=r"subnets 'corp' .* and 'guest' .* overlap"):
        parse_config(doc)


def test_duplicate_vni_rejected(doc):
    doc["subnets"].append({"name": "guest", "vni": 100, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1"})
    with pytest.raises(ConfigError, match="vni 100 is used twice"):
        parse_config(doc)


def test_dhcp_uplink_takes_no_address(doc):
    doc["uplinks"][0] = {"name": "wan0", "interface": "wan0", "mode": "dhcp", "address": "198.18.1.2/24"}
    with pytest.raises(ConfigError, match="dhcp uplink takes no"):
        parse_config(doc)
    doc["uplinks"][0] = {"name": "wan0", "interface": "wan0", "mode": "dhcp"}
    assert parse_config(doc).uplinks[0].mode == "dhcp"


def test_load_config_reports_json_errors(tmp_path, doc):
    p = tmp_path / "c.json"
    p.write_text("{ not json")
    with pytest.raises(ConfigError, match=r"c.json: invalid configuration: not JSON \(line 1"):
        load_config(p)
    p.write_text(json.dumps(doc))
    assert load_config(p).system_ip.exploded == "198.19.255.1"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")


def test_the_upgrade_section_is_validated_naming_the_field(doc):
    sha = "ab" * 32
    good = {"version": "1.3.0", "commit_after_s": 120, "bundles": [
        {"model": "nsg-atom-x86_64", "url": f"https://198.18.0.2:8444/bundles/{sha}", "sha256": sha, "size": 10}]}
    cfg = parse_config({**doc, "upgrade": good})
    assert (cfg.upgrade.version, cfg.upgrade.retry, cfg.upgrade.bundle_for("nsg-atom-x86_64").size) == ("1.3.0", 0, 10)
    assert parse_config(doc).upgrade is None
    for change, field in (({"version": "v1"}, "upgrade.version"), ({"commit_after_s": 0}, "upgrade.commit_after_s"),
                          ({"bundles": [{**good["bundles"][0], "url": "http://198.18.0.2/b"}]},
                           "upgrade.bundles[0].url"),
                          ({"bundles": [{**good["bundles"][0], "sha256": "x"}]}, "upgrade.bundles[0].sha256"),
                          ({"colour": "red"}, "upgrade.colour")):
        with pytest.raises(ConfigError) as err:
            parse_config({**doc, "upgrade": {**good, **change}})
        assert err.value.problems[0].startswith(field + ":"), err.value.problems
