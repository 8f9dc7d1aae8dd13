"""The store's documents (``store.documents``): each enterprise's firewall policy and QoS profile (JSON
documents in the enterprises table), and what the gateways are given: the enterprise as
``controller.mesh`` takes it (``enterprise_model``) and each gateway's rendered config (``config_for``).

Rendering reads every other part's rows (enterprise, subnets, gateways, apps and VMs, the revocation
list, the device site's URL, bundles and upgrade profiles) through the lookups their modules export, so
this part depends on them and none of them on it, except for one call: ``check_render``, the safety
net every write that reaches configs runs before it commits, in the writer's own transaction. A store
that accepted a write can therefore always render every gateway's config.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from controller.enterprise import Enterprise, GatewayDef, SubnetDef
from controller.inputs import StoreError, _validated
from controller.mesh import render
from controller.store_certs import crl_pem
from controller.store_db import Database
from controller.store_enterprises import bump, enterprise_id, enterprise_rec, port_security_of
from controller.store_gateways import gateway_id, gateway_rec
from controller.store_upgrades import bundles_of, profile_of
from controller.store_workloads import apps_of, image_base, vms_of
from nsg.model import ConfigError, GatewayConfig
from nsg.model.policy import PolicyConfig
from nsg.model.qos import QosConfig

_POLICY = TypeAdapter(PolicyConfig)
_QOS = TypeAdapter(QosConfig)


class Documents:
    """Policy and QoS documents; the enterprise model and the per-gateway configs rendered from it."""

    def __init__(self, db: Database):
        self._db = db

    # -- policy and QoS ----------------------------------------------------------------------------

    def _set_doc(self, enterprise: str, column: str, adapter: TypeAdapter, doc: Any) -> Any:
        """Replace one of the enterprise's documents (policy, qos; None removes it). Refused, naming the
        field, if it does not validate or leaves any gateway's config invalid; then nothing changes."""
        value = None if doc is None else _validated(adapter, doc if isinstance(doc, Mapping) else
                                                    doc.model_dump(mode="json"), column)
        with self._db.tx(write=True) as cur:
            ent_id = enterprise_id(cur, enterprise)
            old = cur.execute(f"SELECT {column} FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0]
            new = None if value is None else value.model_dump_json()
            if new != old:
                cur.execute(f"UPDATE enterprises SET {column} = ? WHERE id = ?", (new, ent_id))
                bump(cur, ent_id)
                self.check_render(cur, ent_id)
        return value

    def _get_doc(self, enterprise: str, column: str, model: Any) -> Any:
        with self._db.tx() as cur:
            ent_id = enterprise_id(cur, enterprise)
            doc = cur.execute(f"SELECT {column} FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0]
        return None if doc is None else model.model_validate_json(doc)

    def set_policy(self, enterprise: str, policy: PolicyConfig | Mapping[str, Any] | None) -> PolicyConfig | None:
        """The enterprise's firewall policy (None: no firewall)."""
        return self._set_doc(enterprise, "policy", _POLICY, policy)

    def get_policy(self, enterprise: str) -> PolicyConfig | None:
        return self._get_doc(enterprise, "policy", PolicyConfig)

    def set_qos(self, enterprise: str, qos: QosConfig | Mapping[str, Any] | None) -> QosConfig | None:
        """The enterprise's QoS profile (None: no shaping); rates come from each gateway's uplinks."""
        return self._set_doc(enterprise, "qos", _QOS, qos)

    def get_qos(self, enterprise: str) -> QosConfig | None:
        return self._get_doc(enterprise, "qos", QosConfig)

    # -- rendering ---------------------------------------------------------------------------------

    @staticmethod
    def _model(cur: sqlite3.Cursor, ent_id: int) -> Enterprise:
        ent = enterprise_rec(cur, cur.execute("SELECT name FROM enterprises WHERE id = ?", (ent_id,)).fetchone()[0])
        subnets = [SubnetDef(name=n, vni=v, cidr=c, gateway=g, port_security=port_security_of(ps))
                   for n, v, c, g, ps in cur.execute("SELECT name, vni, cidr, gateway, port_security FROM subnets "
                                                     "WHERE enterprise_id = ? ORDER BY vni", (ent_id,))]
        ids = [r[0] for r in cur.execute("SELECT id FROM gateways WHERE enterprise_id = ? ORDER BY name", (ent_id,))]
        gateways = []
        for gw_id in ids:
            g = gateway_rec(cur, gw_id)
            upgrade = cur.execute("SELECT upgrade FROM gateways WHERE id = ?", (gw_id,)).fetchone()[0]
            gateways.append(GatewayDef(name=g.name, system_ip=g.system_ip, serial=g.serial, uplinks=g.uplinks,
                                       ports=g.ports,
                                       behind_nat=g.behind_nat, role=g.role,  # type: ignore[arg-type]
                                       apps=apps_of(cur, gw_id), vms=vms_of(cur, gw_id), upgrade=profile_of(upgrade)))
        policy, qos, upgrade = cur.execute("SELECT policy, qos, upgrade FROM enterprises WHERE id = ?",
                                           (ent_id,)).fetchone()
        return Enterprise(name=ent.name, generation=ent.generation, transport=ent.transport, ipsec=ent.ipsec,
                          crl=crl_pem(cur),
                          subnets=tuple(subnets), gateways=tuple(gateways), image_base=image_base(cur),
                          policy=None if policy is None else PolicyConfig.model_validate_json(policy),
                          qos=None if qos is None else QosConfig.model_validate_json(qos),
                          bundles=bundles_of(cur, ent_id), upgrade=profile_of(upgrade))

    def check_render(self, cur: sqlite3.Cursor, ent_id: int) -> None:
        """The safety net under the writers' checks, run inside their transaction: a write that would
        leave a gateway without a valid config is refused (and rolled back) rather than discovered
        when it connects."""
        try:
            render(self._model(cur, ent_id))
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise StoreError(next((f for f in ("policy", "qos") if msg.startswith(f)), "enterprise"),
                             f"the change leaves it invalid: {msg}") from None
        except ConfigError as exc:
            problems = "; ".join(exc.problems)
            first = exc.problems[0].removeprefix("(document): ") if exc.problems else ""
            field = next((f for f in ("policy", "qos") if first.startswith(f)), "config")
            raise StoreError(field,
                             f"the change leaves {exc.source} invalid: {problems}") from None

    def enterprise_model(self, name: str) -> Enterprise:
        """The enterprise as ``controller.mesh`` takes it."""
        with self._db.tx() as cur:
            return self._model(cur, enterprise_id(cur, name))

    def config_for(self, gateway: str) -> GatewayConfig:
        """The gateway's full config (full mesh, the enterprise's generation), validated by nsg.model."""
        with self._db.tx() as cur:
            _, ent_id = gateway_id(cur, gateway)
            ent = self._model(cur, ent_id)
        return render(ent)[gateway]
