import pytest


def base_doc() -> dict:
    return {
        "schema_version": 1,
        "system_ip": "198.19.255.1",
        "uplinks": [
            {"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
             "gateway": "198.18.1.1"}
        ],
        "subnets": [
            {"name": "corp", "vni": 100, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1", "ports": ["lan0"]}
        ],
        "peers": [{"name": "b2", "system_ip": "198.19.255.2", "endpoint": "198.18.2.2"}],
    }


@pytest.fixture
def doc() -> dict:
    return base_doc()
