"""Run the reconciler's plan: the engine (docker_backend) and the wiring (attach) put together.

Blocking (the engine API and netlink are synchronous): the daemon calls ``apply`` from a worker
thread. An app whose step fails is reported with the reason and skipped for this pass; the others
go on. The next pass (the periodic resync, or a new desired state) tries again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from containers import attach as wiring
from containers import image_fetch
from containers.docker_backend import DockerBackend, EngineError
from containers.image_fetch import ImageError, TlsContext
from containers.reconcile import Attach, Create, Remove, Start, plan
from containers.spec import AppSpec, Running


@dataclass
class AppsResult:
    changes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # app name -> why it is not as wanted


class Apps:
    def __init__(self, engine: DockerBackend, cache: Path | None = None, tls: TlsContext | None = None):
        self.engine = engine
        self.cache = cache or Path("/var/lib/nsg/images")  # downloaded tarballs, by SHA-256
        self.tls = tls  # the client context for https sources (the gateway's LDevID)
        self.loaded: dict[str, str] = {}  # image reference -> SHA-256 of the tarball we loaded for it

    def actual(self, desired: Mapping[str, AppSpec]) -> dict[str, Running]:
        """The owned containers, with how each running one is wired (for the ones still wanted)."""
        out = {}
        for name, found in self.engine.list().items():
            spec = desired.get(name)
            wired = spec is not None and found.state == "running"
            out[name] = replace(found, attachment=wiring.read(spec, found.pid)) if wired else found
        return out

    def _ensure_image(self, spec: AppSpec) -> None:
        """Load the app's tarball unless this very tarball (by hash) was loaded for its reference."""
        if spec.image_url is None or spec.image_sha256 is None:
            return
        if self.loaded.get(spec.image) == spec.image_sha256 and self.engine.has_image(spec.image):
            return
        path = image_fetch.obtain(spec.image_url, spec.image_sha256, self.cache, self.tls)
        try:
            with open(path, "rb") as f:
                self.engine.load(f, spec.image)
        except OSError as exc:
            raise ImageError(f"image {path}: {exc.strerror}") from None
        self.loaded[spec.image] = spec.image_sha256

    def apply(self, desired: Mapping[str, AppSpec]) -> AppsResult:
        result = AppsResult()
        try:
            ops = plan(desired, self.actual(desired))
        except EngineError as exc:
            result.errors["*"] = str(exc)
            return result
        pids: dict[str, int] = {}
        for op in ops:
            name = op.name if isinstance(op, Remove) else op.spec.name
            if name in result.errors:
                continue  # an earlier step of this app failed: the rest of its steps wait
            try:
                match op:
                    case Remove(_, container_id):
                        self.engine.remove(container_id)
                    case Create(spec):
                        self._ensure_image(spec)
                        self.engine.create(spec)
                    case Start(spec):
                        pids[name] = self.engine.start(spec)
                    case Attach(spec):
                        wiring.attach(spec, pids.get(name) or self.engine.pid(spec))
            except (EngineError, ImageError, wiring.AttachError) as exc:
                text = str(exc)  # named for whoever reads it far from here (the controller's API)
                result.errors[name] = text if text.startswith((f"{name}:", f"app {name}:")) else f"app {name}: {text}"
                continue
            result.changes.append(str(op))
        image_fetch.prune(self.cache, {s.image_sha256 for s in desired.values() if s.image_sha256})
        return result
