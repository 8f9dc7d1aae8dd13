"""The OpenAPI document matches the app's routes both ways, and its references resolve."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.api import ROUTES, make_app, openapi
from controller.store import Store

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ACTIONS = {("post", "/api/v1/gateways/{gateway}/reset-identity")}  # POSTs that take no body


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        yield s


def app_routes(app) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def doc_routes(doc: dict) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops if m in METHODS}


def refs(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if isinstance(node.get("$ref"), str) else []) + [
            r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_app_route_is_documented_and_every_documented_route_exists(store):
    app, doc = make_app(store), openapi()
    assert app_routes(app) == doc_routes(doc)
    assert len(app_routes(app)) == len(ROUTES) == 45


def test_the_comparison_can_fail(store):
    app, doc = make_app(store), openapi()
    del doc["paths"]["/api/v1/gateways/{gateway}"]["patch"]
    assert app_routes(app) - doc_routes(doc) == {("PATCH", "/api/v1/gateways/{gateway}")}
    async def extra(request):
        return None

    app.router.add_get("/api/v1/extra", extra)
    assert ("GET", "/api/v1/extra") in app_routes(app) - doc_routes(openapi())


def test_document_shape():
    doc = openapi()
    assert doc["openapi"] == "3.1.0" and doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    schemas = doc["components"]["schemas"]
    for r in refs(doc):
        assert r.startswith("#/components/schemas/") and r.removeprefix("#/components/schemas/") in schemas, r
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in doc["paths"].items():
        params = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        for method, op in ops.items():
            assert "401" in op["responses"] and op["summary"], (method, path)
            assert {p["name"] for p in op["parameters"]} == params
            if params:
                assert "404" in op["responses"]
            if (method, path) in ACTIONS:  # an action on the resource: nothing to send
                assert "requestBody" not in op and "400" not in op["responses"], (method, path)
            elif method in ("post", "patch"):
                content = op["requestBody"]["content"]
                if "application/x-tar" in content:  # the image upload: raw bytes
                    assert content["application/x-tar"]["schema"] == {"type": "string", "format": "binary"}
                else:
                    assert content["application/json"]["schema"]["$ref"]
                assert "400" in op["responses"]


def test_models_in_the_document_are_the_wire_models():
    schemas = openapi()["components"]["schemas"]
    gw_in, gw_out = schemas["GatewayIn"], schemas["GatewayOut"]
    assert gw_in["additionalProperties"] is False  # unknown fields refused
    assert gw_in["properties"]["activation_code"]["anyOf"][0]["writeOnly"] is True
    assert "activation_code" not in gw_out["properties"] and "system_ip" in gw_out["properties"]
    assert {"schema_version", "generation", "peers"} <= set(schemas["GatewayConfig"]["properties"])
    op = openapi()["paths"]["/api/v1/gateways/{gateway}/config"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GatewayConfig"}


def test_the_app_serves_the_document(store):
    token = store.tokens.create("t")

    async def scenario():
        async with TestClient(TestServer(make_app(store), host="127.0.0.1")) as client:
            resp = await client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {token}"})
            return resp.status, await resp.json()

    assert asyncio.run(scenario()) == (200, openapi())
