"""The controller's admin REST API under /api/v1, and its OpenAPI 3.1 document.

One table, ROUTES, names each operation: method, path, handler, request and response model.
The aiohttp router and the OpenAPI document are both built from it, so they cannot drift
apart (tests/unit/controller/test_openapi.py checks both ways anyway).

Every request needs ``Authorization: Bearer <token>`` (tokens come from ``nsg-controller token
create``, optionally with an expiry; there are no default credentials). A body is read only as
the media type its route documents (415 otherwise) and validated strictly by pydantic models
that refuse unknown fields and coercions; semantics (duplicates, overlaps, references) are the
store's to check. Errors are ``{"error": {"code", "message", "field"}}``; bad input is the
client's 4xx, never a 500; a server fault is logged here and the client learns only that it
happened.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import WSCloseCode, web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from controller.api_http import (
    API,
    AUTH,
    BUNDLES,
    HUB,
    IMAGES,
    JSON,
    RELEASE_KEYS,
    SECURITY,
    STORE,
    ApiError,
    Route,
    answer,
    auth_middleware,
    error_middleware,
    read_body,
)
from controller.api_models import (
    EnterpriseIn,
    EnterpriseList,
    EnterpriseOut,
    Error,
    GatewayIn,
    GatewayList,
    GatewayOut,
    GatewayPatch,
    GatewayStatus,
    IdentityReset,
    PolicyCountersOut,
    PolicyOut,
    PortSecurityIn,
    QosOut,
    RuleCount,
    SecurityEventList,
    SecurityEventsAccepted,
    SecurityEventsIn,
    SecuritySection,
    SubnetIn,
    SubnetList,
    SubnetOut,
    VmLive,
    _enterprise_out,
    _gateway_out,
    _security_out,
    _subnet_out,
)
from controller.api_security import list_security_events, post_security_events
from controller.api_upgrades import UPGRADE_ROUTES, upgrade_memory
from controller.api_workloads import WORKLOAD_ROUTES, _live, _session
from controller.channel_server import ChannelHub
from controller.security_events import SecurityEvents
from controller.store import (
    Store,
)
from nsg.model import GatewayConfig
from nsg.model.policy import PolicyConfig
from nsg.model.qos import QosConfig

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


# -- handlers ------------------------------------------------------------------------------------


def _store(request: web.Request) -> Store:
    return request.app[STORE]


async def list_enterprises(request: web.Request) -> web.Response:
    """List the enterprises."""
    return answer(EnterpriseList(enterprises=[_enterprise_out(e) for e in _store(request).enterprises.list()]))


async def create_enterprise(request: web.Request) -> web.Response:
    """Create an enterprise (transport esp: gateways authenticate with their own LDevIDs; with ipsec
    {"psk": secret}, each pair of gateways gets its own key derived from that secret)."""
    body: EnterpriseIn = await read_body(request, EnterpriseIn)
    ipsec = None if body.ipsec is None else body.ipsec.model_dump(exclude_none=True)
    rec = _store(request).enterprises.create(body.name, transport=body.transport, ipsec=ipsec)
    return answer(_enterprise_out(rec), 201, f"{API}/enterprises/{rec.name}")


async def get_enterprise(request: web.Request) -> web.Response:
    """Show an enterprise and its generation."""
    return answer(_enterprise_out(_store(request).enterprises.get(request.match_info["enterprise"])))


async def delete_enterprise(request: web.Request) -> web.Response:
    """Delete an enterprise with its subnets (refused while it has gateways)."""
    _store(request).enterprises.delete(request.match_info["enterprise"])
    return web.Response(status=204)


async def list_subnets(request: web.Request) -> web.Response:
    """List an enterprise's subnets."""
    subnets = _store(request).enterprises.list_subnets(request.match_info["enterprise"])
    return answer(SubnetList(subnets=[_subnet_out(s) for s in subnets]))


async def add_subnet(request: web.Request) -> web.Response:
    """Add a subnet (a VNI and an IPv4 prefix, the same at every site)."""
    body: SubnetIn = await read_body(request, SubnetIn)
    ent = request.match_info["enterprise"]
    rec = _store(request).enterprises.add_subnet(ent, body.name, vni=body.vni, cidr=body.cidr, gateway=body.gateway,
                                                 port_security=body.port_security)
    return answer(_subnet_out(rec), 201, f"{API}/enterprises/{ent}/subnets/{rec.name}")


async def set_port_security(request: web.Request) -> web.Response:
    """Set a subnet's LAN port security (MACs per port, learn rate and burst) at every site; null: off."""
    body: PortSecurityIn = await read_body(request, PortSecurityIn)
    rec = _store(request).enterprises.set_port_security(request.match_info["enterprise"],
                                                        request.match_info["subnet"], body.port_security)
    return answer(_subnet_out(rec))


async def delete_subnet(request: web.Request) -> web.Response:
    """Delete a subnet (refused while a gateway has LAN ports in it)."""
    _store(request).enterprises.delete_subnet(request.match_info["enterprise"], request.match_info["subnet"])
    return web.Response(status=204)


async def list_gateways(request: web.Request) -> web.Response:
    """List an enterprise's gateways."""
    gateways = _store(request).gateways.list(request.match_info["enterprise"])
    return answer(GatewayList(gateways=[_gateway_out(g) for g in gateways]))


async def add_gateway(request: web.Request) -> web.Response:
    """Add a gateway; the controller assigns its system IP."""
    body: GatewayIn = await read_body(request, GatewayIn)
    rec = _store(request).gateways.add(
        request.match_info["enterprise"], body.name, serial=body.serial, uplinks=body.uplinks, ports=body.ports,
        behind_nat=body.behind_nat, activation_code=body.activation_code, role=body.role)
    return answer(_gateway_out(rec), 201, f"{API}/gateways/{rec.name}")


async def get_gateway(request: web.Request) -> web.Response:
    """Show a gateway (the activation code is never shown, only whether one is set)."""
    return answer(_gateway_out(_store(request).gateways.get(request.match_info["gateway"])))


async def update_gateway(request: web.Request) -> web.Response:
    """Change some of a gateway's fields."""
    body: GatewayPatch = await read_body(request, GatewayPatch)
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    for k in ("serial", "uplinks", "ports", "behind_nat"):
        if k in changes and changes[k] is None:
            raise ApiError(400, "invalid", "may be left out but not null", k)
    store = _store(request)
    current = store.gateways.get(request.match_info["gateway"])
    _check_interfaces(request, changes.get("serial", current.serial), changes.get("ports"), changes.get("uplinks"))
    window = _confirm_window(request)
    rec = store.gateways.update(request.match_info["gateway"], **changes)
    if window is not None and request.app[HUB] is not None:
        request.app[HUB].confirm_next[rec.serial] = window  # the push this change makes
    return answer(_gateway_out(rec))


def _confirm_window(request: web.Request) -> float | None:
    """``?confirm_s=N``: the commit-confirm window of the push this change makes (5 to 3600 s)."""
    raw = request.query.get("confirm_s")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "invalid", f"not a number of seconds: {raw[:40]!r}", "confirm_s") from None
    if not 5 <= value <= 3600:
        raise ApiError(400, "invalid", "give 5 to 3600 seconds", "confirm_s")
    return value


def _check_interfaces(request: web.Request, serial: str, ports: Any, uplinks: Any) -> None:
    """A LAN port or uplink the gateway does not have would cut its LAN or its WAN while both sides said
    "ok": refused when the gateway has told us its interfaces (in its channel hello)."""
    hub = request.app[HUB]
    have = set(hub.interfaces.get(serial, ())) if hub is not None else set()
    if not have:
        return
    named = [(f"ports.{subnet}[{i}]", ifname) for subnet, lan in (ports or {}).items() for i, ifname in enumerate(lan)]
    named += [(f"uplinks[{i}].interface", getattr(u, "interface", None) or (u.get("interface") if isinstance(u, dict)
                                                                           else None))
              for i, u in enumerate(uplinks or ())]
    for where, ifname in named:
        if ifname is not None and ifname not in have:
            raise ApiError(400, "invalid", f"the gateway has no interface {ifname!r} (it reports: "
                                           f"{', '.join(sorted(have))})", where)


async def delete_gateway(request: web.Request) -> web.Response:
    """Delete a gateway (its peers lose it at the next generation)."""
    _store(request).gateways.delete(request.match_info["gateway"])
    return web.Response(status=204)


async def reset_identity(request: web.Request) -> web.Response:
    """Reset a box's identity: revoke its LDevIDs so that it may enroll once more with its IDevID.

    For a box whose state was wiped (or replaced by a spare with the same serial): until then the EST
    server refuses a second enrollment of a box that holds a valid LDevID. A channel open with a revoked
    LDevID is closed."""
    store = _store(request)
    name = request.match_info["gateway"]
    serial, revoked = store.gateways.reset_identity(name)
    hub = request.app[HUB]
    session = hub.sessions.get(serial) if hub is not None else None
    if session is not None:
        try:  # a gateway that does not read its close frame is not waited for
            await asyncio.wait_for(session.ws.close(code=WSCloseCode.POLICY_VIOLATION,
                                                    message=b"identity reset by the operator"), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            session.abort("identity reset by the operator")
    log.warning("identity reset", extra={"fields": {"gateway": name, "serial": serial, "revoked": revoked}})
    return answer(IdentityReset(name=name, serial=serial, revoked=revoked))


async def gateway_config(request: web.Request) -> web.Response:
    """The gateway's rendered configuration: full mesh, the enterprise's generation."""
    return answer(_store(request).documents.config_for(request.match_info["gateway"]))


async def gateway_status(request: web.Request) -> web.Response:
    """What the gateway last reported: channel up, generation applied, counters, its apps' state."""
    name = request.match_info["gateway"]
    store = _store(request)
    generation = store.enterprises.get(store.gateways.get(name).enterprise).generation
    session = _session(request, name)
    hub, serial = request.app[HUB], store.gateways.get(name).serial
    failed = hub.failed.get(serial) if hub is not None else None
    memory = {"rolled_back_generation": failed.generation if failed else None,
              "rollback_reason": failed.error if failed else None,
              "interfaces": list(hub.interfaces.get(serial, ())) if hub is not None else []}
    counters, events = request.app[SECURITY].of(serial)
    memory["security"] = SecuritySection(counters=counters, events=[_security_out(name, e) for e in events])
    memory |= upgrade_memory(request, serial)
    if session is None:
        return answer(GatewayStatus(name=name, connected=False, generation=generation, **memory))
    last = session.results[-1] if session.results else None
    t = session.telemetry
    return answer(GatewayStatus(
        name=name, connected=True, generation=generation, sent_generation=session.sent_generation,
        applied_generation=last.running if last else None, last_apply_error=last.error if last else None,
        waiting=list(last.waiting) if last else [],
        telemetry_at=t.ts if t else None, counters=dict(t.counters) if t else {},
        apps=_live(request, name), vms=_live(request, name, "vm", VmLive), **memory))


def _policy_out(request: web.Request, ent: str) -> PolicyOut:
    store = _store(request)
    return PolicyOut(enterprise=ent, generation=store.enterprises.get(ent).generation,
                     policy=store.documents.get_policy(ent))


async def get_policy(request: web.Request) -> web.Response:
    """Show an enterprise's firewall policy (tenants, ACLs, groups, breakout)."""
    return answer(_policy_out(request, request.match_info["enterprise"]))


async def put_policy(request: web.Request) -> web.Response:
    """Replace an enterprise's firewall policy; every edge gateway gets it in its next generation."""
    body: PolicyConfig = await read_body(request, PolicyConfig)
    ent = request.match_info["enterprise"]
    _store(request).documents.set_policy(ent, body)
    return answer(_policy_out(request, ent))


async def delete_policy(request: web.Request) -> web.Response:
    """Remove an enterprise's firewall policy (gateways stop filtering and breaking out)."""
    _store(request).documents.set_policy(request.match_info["enterprise"], None)
    return web.Response(status=204)


def _qos_out(request: web.Request, ent: str) -> QosOut:
    store = _store(request)
    return QosOut(enterprise=ent, generation=store.enterprises.get(ent).generation, qos=store.documents.get_qos(ent))


async def get_qos(request: web.Request) -> web.Response:
    """Show an enterprise's QoS profile (forwarding classes, DSCP map, limiters)."""
    return answer(_qos_out(request, request.match_info["enterprise"]))


async def put_qos(request: web.Request) -> web.Response:
    """Replace an enterprise's QoS profile; gateways shape the uplinks whose egress_kbit is set."""
    body: QosConfig = await read_body(request, QosConfig)
    ent = request.match_info["enterprise"]
    _store(request).documents.set_qos(ent, body)
    return answer(_qos_out(request, ent))


async def delete_qos(request: web.Request) -> web.Response:
    """Remove an enterprise's QoS profile (gateways stop shaping)."""
    _store(request).documents.set_qos(request.match_info["enterprise"], None)
    return web.Response(status=204)


async def policy_counters(request: web.Request) -> web.Response:
    """The firewall's per-rule hit counters, as the gateway last reported them."""
    name = request.match_info["gateway"]
    session = _session(request, name)
    got = session.policy_counters if session is not None else None
    if got is None:
        return answer(PolicyCountersOut(gateway=name, connected=session is not None))
    return answer(PolicyCountersOut(gateway=name, connected=True, generation=got.generation, ts=got.ts,
                                   counters={k: RuleCount(packets=p, bytes=b) for k, (p, b) in got.counters.items()}))


async def get_openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document."""
    return web.json_response(openapi())


# -- the route table -----------------------------------------------------------------------------


ROUTES: tuple[Route, ...] = (
    Route("GET", f"{API}/enterprises", list_enterprises, response=EnterpriseList),
    Route("POST", f"{API}/enterprises", create_enterprise, EnterpriseIn, EnterpriseOut, 201),
    Route("GET", f"{API}/enterprises/{{enterprise}}", get_enterprise, response=EnterpriseOut),
    Route("DELETE", f"{API}/enterprises/{{enterprise}}", delete_enterprise, status=204),
    Route("GET", f"{API}/enterprises/{{enterprise}}/subnets", list_subnets, response=SubnetList),
    Route("POST", f"{API}/enterprises/{{enterprise}}/subnets", add_subnet, SubnetIn, SubnetOut, 201),
    Route("DELETE", f"{API}/enterprises/{{enterprise}}/subnets/{{subnet}}", delete_subnet, status=204),
    Route("PUT", f"{API}/enterprises/{{enterprise}}/subnets/{{subnet}}/port-security", set_port_security,
          PortSecurityIn, SubnetOut),
    Route("GET", f"{API}/enterprises/{{enterprise}}/gateways", list_gateways, response=GatewayList),
    Route("POST", f"{API}/enterprises/{{enterprise}}/gateways", add_gateway, GatewayIn, GatewayOut, 201),
    Route("GET", f"{API}/gateways/{{gateway}}", get_gateway, response=GatewayOut),
    Route("PATCH", f"{API}/gateways/{{gateway}}", update_gateway, GatewayPatch, GatewayOut),
    Route("DELETE", f"{API}/gateways/{{gateway}}", delete_gateway, status=204),
    Route("POST", f"{API}/gateways/{{gateway}}/reset-identity", reset_identity, response=IdentityReset),
    Route("GET", f"{API}/gateways/{{gateway}}/config", gateway_config, response=GatewayConfig),
    Route("GET", f"{API}/gateways/{{gateway}}/status", gateway_status, response=GatewayStatus),
    *WORKLOAD_ROUTES,
    Route("GET", f"{API}/gateways/{{gateway}}/policy/counters", policy_counters, response=PolicyCountersOut),
    Route("GET", f"{API}/enterprises/{{enterprise}}/policy", get_policy, response=PolicyOut),
    Route("PUT", f"{API}/enterprises/{{enterprise}}/policy", put_policy, PolicyConfig, PolicyOut),
    Route("DELETE", f"{API}/enterprises/{{enterprise}}/policy", delete_policy, status=204),
    Route("GET", f"{API}/enterprises/{{enterprise}}/qos", get_qos, response=QosOut),
    Route("PUT", f"{API}/enterprises/{{enterprise}}/qos", put_qos, QosConfig, QosOut),
    Route("DELETE", f"{API}/enterprises/{{enterprise}}/qos", delete_qos, status=204),
    Route("GET", f"{API}/security-events", list_security_events, response=SecurityEventList),
    Route("POST", f"{API}/security-events", post_security_events, SecurityEventsIn, SecurityEventsAccepted),
    *UPGRADE_ROUTES,
    Route("GET", f"{API}/openapi.json", get_openapi),
)


def make_app(store: Store, *, tokens: Callable[[str], bool] | None = None, hub: ChannelHub | None = None,
             images: Any = None, security: SecurityEvents | None = None, bundles: Any = None,
             release_keys: Any = None) -> web.Application:
    """The admin API over ``store``. ``tokens`` decides whether a bearer token is good; by
    default the store's token table does (``nsg-controller token create``; it knows expiries too).
    ``hub`` (the device site's channel) gives live gateway state; ``images`` is where uploaded image
    tarballs go, ``bundles`` upgrade bundles, verified with ``release_keys`` (nsg.upgrade.bundle.ReleaseKey
    list; None: bundles are refused); ``security`` keeps security events (default: the hub's, or its own)."""
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY)
    app[STORE] = store
    app[AUTH] = store.tokens.verdict if tokens is None else (lambda t: "valid" if tokens(t) else "unknown")
    app[HUB] = hub
    app[IMAGES] = images
    app[BUNDLES] = bundles
    app[RELEASE_KEYS] = release_keys
    app[SECURITY] = security if security is not None else hub.security if hub is not None else SecurityEvents()
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler, name=r.handler.__name__)
    return app


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]


def _responses(r: Route, refs: Mapping[tuple[type[BaseModel], str], Any]) -> dict[str, Any]:
    def content(ref: Any) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": ref}}}

    if r.response is not None:
        ok = {"description": "OK", **content(refs[(r.response, "serialization")])}
    elif r.status == 204:
        ok = {"description": "done"}
    else:
        ok = {"description": "OK", **content({"type": "object"})}
    out = {str(r.status): ok}
    error = content(refs[(Error, "serialization")])
    out["401"] = {"description": "no valid bearer token", **error}
    if r.body is not None or r.raw is not None:
        out["400"] = {"description": "the body is invalid; error.field names the field", **error}
        out["415"] = {"description": f"the body is not sent as {r.raw or JSON}", **error}
    if _path_params(r.path):
        out["404"] = {"description": "not found", **error}
    if r.method in ("POST", "PUT", "PATCH", "DELETE"):
        out["409"] = {"description": "conflicts with what is stored (a duplicate, or still in use)", **error}
    return out


@functools.cache
def _openapi_json() -> str:
    bodies = {r.body for r in ROUTES if r.body is not None}
    answers = {r.response for r in ROUTES if r.response is not None} | {Error}
    pairs = [(m, "validation") for m in sorted(bodies, key=lambda m: m.__name__)]
    pairs += [(m, "serialization") for m in sorted(answers, key=lambda m: m.__name__)]
    refs, defs = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        doc = (r.handler.__doc__ or r.handler.__name__).strip()
        op: dict[str, Any] = {
            "operationId": r.handler.__name__,
            "summary": doc.splitlines()[0],
            "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                           for p in _path_params(r.path)],
            "responses": _responses(r, refs),
        }
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(r.body, "validation")]}}}
        elif r.raw is not None:
            op["requestBody"] = {"required": True, "content": {r.raw: {"schema": {"type": "string",
                                                                                  "format": "binary"}}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return json.dumps({
        "openapi": "3.1.0",
        "info": {"title": "nsg-controller admin API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document, built from ROUTES and the models' JSON schemas."""
    return json.loads(_openapi_json())
