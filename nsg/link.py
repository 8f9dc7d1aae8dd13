"""The daemon's side of its controller: bootstrap, then the management channel; configs in (each on
trial until the controller confirms it: nsg/confirm.py), results, telemetry and policy counters out.
A mixin of nsg.daemon.Daemon (it uses the daemon's config, counters and converge); kept apart so the
daemon stays readable. What comes in (a renewed LDevID, the end of a trial window) is an event on the
daemon's queue; a rollback is a converge to the previous config (nsg.engine sets what differs)."""

from __future__ import annotations

import asyncio
import logging
import time

from nsg.engine import Event
from nsg.model import ConfigError
from nsg.model.status import GuardStatus, QosStatus
from nsg.telemetry import telemetry_counters

log = logging.getLogger("nsg.daemon")


class ControllerLink:
    async def _bootstrap_then_channel(self) -> None:
        assert self.zerotouch is not None
        doc = await self.zerotouch.run()
        self.controller_url = doc.channel_url
        if doc.config is not None and self.config is None:
            # the initial config came signed with the onboarding data: forward before the channel is up
            from nsg.model import parse_config

            try:
                cfg = parse_config(doc.config, source="onboarding information")
            except ConfigError as exc:
                self._refused(str(exc), exc.problems)
            else:
                await self.install_config(cfg, "onboarding", generation=cfg.generation)
        task = self._start_channel()
        if task is not None:
            await task

    def _start_channel(self) -> asyncio.Task | None:
        """With a controller: hold the mTLS channel (LDevID, the controller's trust anchor from bootstrap)."""
        if self.controller_url is None:
            return None
        from bootstrap.driver import Bootstrapper
        from bootstrap.identity import FileIdentityStore
        from bootstrap.renew import keep_enrolled
        from nsg.channel.client import ChannelClient

        ident = FileIdentityStore(self.state_dir / "identity")
        cafile = self.state_dir / "identity" / "controller-ca.pem"

        onboarding = Bootstrapper(ident).done()
        if onboarding is not None:  # bootstrapped here: keep the LDevID fresh (re-enroll at 2/3 of its life)
            self._renew = asyncio.get_running_loop().create_task(
                keep_enrolled(ident, onboarding.est_url, on_renewed=lambda: self._request(Event("renewed"))),
                name="ldevid-renewal")
        self._device_tls = lambda: ident.tls_context("ldevid", cafile)  # also fetches app images
        self.channel = ChannelClient(self.controller_url, self._device_tls, ident.serial(),
                                     self._remote_config, lambda: self.generation,
                                     backoff=(1.0, self.channel_retry_max), on_confirm=self._on_confirm,
                                     greeting=self._channel_greeting, interfaces=self._interfaces)
        return asyncio.get_running_loop().create_task(self._channel_and_telemetry(self.telemetry_interval),
                                                      name="channel")

    async def _channel_and_telemetry(self, every: float = 30.0) -> None:
        from nsg.channel import wire

        assert self.channel is not None
        runner = asyncio.create_task(self.channel.run())
        try:
            while not runner.done():
                await asyncio.sleep(every)
                qos = await self.enforce.qos_status()  # the shaper's class counters, read now
                guard = await self.enforce.guard_status()
                await self.channel.send(self._telemetry(qos, guard))
                fw = self.enforce.policy
                if fw is not None and fw.state.digest is not None:
                    counted = await asyncio.to_thread(fw.counters)
                    await self.channel.send(wire.PolicyCounters(
                        ts=time.time(), generation=self.generation,
                        counters={k: (v["packets"], v["bytes"]) for k, v in counted.items()}))
        finally:
            runner.cancel()

    def _telemetry_soon(self) -> None:
        """Send telemetry now (an app's state changed): the controller hears of a crash or a bad image
        within a pass, not at the next 30 s tick. At most one send in flight."""
        if self.channel is None or (self._telemetry_task is not None and not self._telemetry_task.done()):
            return

        async def send() -> None:
            assert self.channel is not None
            try:
                await self.channel.send(self._telemetry())
            except Exception as exc:  # noqa: BLE001 - the periodic send will carry it
                log.debug("prompt telemetry not sent: %s", exc)

        self._telemetry_task = asyncio.get_running_loop().create_task(send(), name="telemetry")

    def _telemetry(self, qos: QosStatus | None = None, guard: GuardStatus | None = None):
        """``qos``: the shaper's status with its class counters, read by the caller (netlink, in a
        worker thread); ``guard``: the input guard's status (what it dropped: attack traffic to alert on)."""
        from nsg.channel import wire

        return wire.Telemetry(ts=time.time(), counters=telemetry_counters(
            self.counters, self.generation, self.tunnels.status() if self.tunnels else None,
            self.workloads.counters(), qos, guard, self.confirm.status(time.monotonic())))

    async def _remote_config(self, msg):
        """A config from the controller: validated here; refused ones leave everything as it was. A new
        one runs on trial (nsg/confirm.py) until the controller confirms it over the channel."""
        from nsg.channel import wire
        from nsg.model import parse_config

        rb = self.confirm.last_rollback
        if rb is not None and self.confirm.refuses(msg.generation):
            # not applied again; the report says why it was undone in the first place
            return wire.ApplyResult(generation=msg.generation, ok=False, rolled_back=True, running=self.generation,
                                    error=rb.reason[:4000])
        try:
            cfg = parse_config(msg.config, source=f"controller generation {msg.generation}")
        except ConfigError as exc:
            self._refused(str(exc), exc.problems)
            return wire.ApplyResult(generation=msg.generation, ok=False, error=str(exc)[:4000],
                                    running=self.generation)
        previous, previous_generation, previous_credentials = self.config, self.generation, self.credentials
        trial = previous is not None and cfg != previous
        error = await self.install_config(cfg, "controller", generation=msg.generation, persist=not trial)
        if error is None and trial:
            assert previous is not None
            t = self.confirm.start(msg.generation, previous, previous_generation, time.monotonic(), msg.confirm_s,
                                   previous_credentials)
            log.info("generation %d on trial: it becomes last good once the controller confirms it", t.generation,
                     extra={"fields": {"window_s": t.window_s, "fallback": t.previous_generation}})
            self._arm_confirm(t.window_s)
        waiting = tuple(w[:200] for w in (self.last_apply.waiting if self.last_apply else ()))[:64]
        return wire.ApplyResult(generation=msg.generation, ok=error is None, error=error and error[:4000],
                                running=self.generation, waiting=waiting)

    def _arm_confirm(self, after_s: float) -> None:
        async def timer() -> None:
            await asyncio.sleep(after_s)
            self._request(Event("confirm-timeout"))

        if self._confirm_timer is not None:
            self._confirm_timer.cancel()
        self._confirm_timer = asyncio.get_running_loop().create_task(timer(), name="confirm-window")

    async def _on_confirm(self, generation: int) -> None:
        """The controller heard us over the channel with ``generation`` running: it is the last good one."""
        if self.confirm.confirm(generation) and generation == self.generation:
            self._persist_last_good()
            log.info("generation %d confirmed by the controller: kept as last good", generation)

    async def _rollback_if_due(self) -> None:
        trial = self.confirm.due(time.monotonic())
        if trial is None:
            return
        channel = self.channel.status() if self.channel else None
        why = (channel and channel.last_error) or ("the channel is up but no confirm came"
                                                   if channel and channel.connected else "the channel is down")
        reason = (f"no confirmation from the controller within {trial.window_s:g} s of applying generation "
                  f"{trial.generation} ({why})")
        try:  # the credentials kept with the previous config (loaded again after an LDevID renewal)
            creds = self._credentials_for(trial.previous, "rollback", trial.previous_credentials)
        except ConfigError as exc:  # reaching the controller comes first: IKE keeps the trial's
            log.error("rollback: the previous config's credentials: %s", exc)
            creds = self.credentials
        self.config, self.generation, self.credentials = trial.previous, trial.previous_generation, creds
        result = await self._converge("rollback")
        rb = self.confirm.rolled_back(trial, reason)
        self.counters["rollbacks"] = self.counters.get("rollbacks", 0) + 1
        log.error("rolled back to generation %d: %s", rb.restored, reason,
                  extra={"fields": {"undone": rb.generation, "apply_error": result.error}})
        if self.channel is not None:
            self.channel.reconnect()  # the report goes out as soon as the channel is up with the old config

    def _interfaces(self) -> tuple[str, ...]:
        """The box's own network interfaces (not the ones nsg makes), for the controller to check LAN
        ports against. Blocking (netlink): the channel calls it in a worker thread."""
        snap = self.kernel.snapshot()
        return tuple(sorted(n for n, link in snap.links.items() if not link.owned and n != "lo"))[:256]

    def _channel_greeting(self) -> list:
        """Sent right after each hello: a rollback the controller has not heard of yet, and the security
        alerts that waited for the channel."""
        from nsg.channel import wire

        out: list = []
        rb, self.confirm.unreported = self.confirm.unreported, None
        if rb is not None:
            out.append(wire.ApplyResult(generation=rb.generation, ok=False, rolled_back=True, running=rb.restored,
                                        error=rb.reason[:4000]))
        return out + [event for _alert, event in self._security_events(self.alerts.take())] + [self._upgrade_event()]

    def _upgrade_event(self):
        """The upgrade state (nsg.model.upgrade.UpgradeState) as a channel event of kind "upgrade": sent
        after each hello and whenever it changes, so the controller always holds the box's latest word."""
        from nsg.channel import wire
        from nsg.upgrade.agent import event_detail

        return wire.Event(ts=time.time(), kind="upgrade", detail=event_detail(self.upgrades.status()))

    def _upgrade_soon(self) -> asyncio.Task | None:
        """The upgrade state changed: tell the controller now if the channel is up (else the next hello does).
        Returns the send (the upgrade agent waits for it before a reboot)."""
        if self.channel is None or not self.channel.connected:
            return None

        async def send() -> None:
            try:
                await self.channel.send(self._upgrade_event())
            except Exception as exc:  # noqa: BLE001 - the next change or hello carries it
                log.debug("upgrade state not sent: %s", exc)

        return asyncio.get_running_loop().create_task(send(), name="upgrade-report")

    def _security_events(self, alerts) -> list[tuple]:
        """The channel events of ``alerts``; one that does not fit an Event (a field too long or too deep
        for the channel's bounds) is dropped, logged and counted (``alerts_unsendable``): it stays in
        ``nsg status`` and the log, and never breaks the session that carries the others. (alert, event)
        pairs."""
        out = []
        for alert in alerts:
            try:
                out.append((alert, _security_event(alert)))
            except ValueError as exc:  # pydantic's ValidationError is one
                self.counters["alerts_unsendable"] = self.counters.get("alerts_unsendable", 0) + 1
                log.warning("alert not sent to the controller: it does not fit a channel event: %s",
                            str(exc).splitlines()[0], extra={"fields": {"reason": alert.reason}})
        return out

    def _alerts_soon(self) -> None:
        """Hand the queued alerts to the controller now if the channel is up (else the next hello does)."""
        if self.channel is None or not self.channel.connected:
            return

        async def send() -> None:
            pending = self._security_events(self.alerts.take())
            for i, (_alert, event) in enumerate(pending):
                try:
                    sent = await self.channel.send(event)
                except Exception as exc:  # noqa: BLE001 - kept for the next hello
                    log.debug("alert not sent: %s", exc)
                    sent = False
                if not sent:
                    self.alerts.put_back([alert for alert, _event in pending[i:]])
                    return

        asyncio.get_running_loop().create_task(send(), name="alerts")


def _security_event(alert):
    """A channel Event of kind "security" (nsg.channel.wire.SecurityDetail): reason, count, message and
    the alert's fields (a MAC, a port)."""
    from nsg.channel import wire

    reserved = {"reason", "count", "message"}
    detail = {"reason": alert.reason, "count": 1, "message": alert.message,
              **{k: v for k, v in alert.fields.items() if k not in reserved}}
    return wire.Event(ts=alert.ts, kind="security", detail=detail)

