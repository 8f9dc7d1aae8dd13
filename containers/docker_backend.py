"""The one module of `containers` that talks to Docker (the docker SDK, the engine's API socket).

Only containers carrying the LABEL_APP label are nsg's; nothing else is listed, changed or removed.
"""

from __future__ import annotations

from typing import BinaryIO

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from containers.spec import LABEL_APP, LABEL_SPEC, AppSpec, Running


class EngineError(RuntimeError):
    """The engine refused or could not be reached (a local fault, with the engine's words)."""


class DockerBackend:
    def __init__(self, base_url: str = "unix:///run/docker.sock", timeout: float = 30):
        try:
            self.client = docker.DockerClient(base_url=base_url, timeout=timeout)
        except DockerException as exc:
            raise EngineError(f"docker engine at {base_url}: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (DockerException, OSError):
            return False

    def list(self) -> dict[str, Running]:
        try:
            found = self.client.containers.list(all=True, filters={"label": LABEL_APP})
        except (DockerException, OSError) as exc:
            raise EngineError(f"listing containers: {exc}") from None
        out: dict[str, Running] = {}
        for c in found:
            state = c.attrs.get("State", {})
            name = c.labels.get(LABEL_APP, "")
            out[name] = Running(name, c.id, c.labels.get(LABEL_SPEC, ""), state.get("Status", "unknown"),
                                int(state.get("Pid") or 0), int(c.attrs.get("RestartCount") or 0),
                                bool(state.get("OOMKilled")))
        return out

    def has_image(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
        except ImageNotFound:
            return False
        except (DockerException, OSError) as exc:
            raise EngineError(f"looking up image {ref}: {exc}") from None
        return True

    def load(self, data: bytes | BinaryIO, ref: str) -> None:
        """`docker load` a verified tarball; it must bring the reference the app runs."""
        try:
            images = self.client.images.load(data)
        except (DockerException, OSError) as exc:
            raise EngineError(f"loading the image tarball for {ref}: {str(exc)[:300]}") from None
        tags = sorted({t for i in images for t in i.tags})
        if ref not in tags:
            raise EngineError(f"the image tarball for {ref} holds {tags or 'no tagged image'}")

    def create(self, spec: AppSpec) -> str:
        kw: dict = {}
        if spec.memory_mb:
            kw["mem_limit"] = f"{spec.memory_mb}m"
            kw["memswap_limit"] = f"{spec.memory_mb}m"  # no swap beyond the limit: over it means OOM
        if spec.cpus:
            kw["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.pids:
            kw["pids_limit"] = spec.pids
        if spec.restart != "no":
            kw["restart_policy"] = {"Name": spec.restart}
        try:
            c = self.client.containers.create(
                spec.image, list(spec.command) or None, name=spec.container_name, detach=True,
                labels={**dict(spec.labels), LABEL_APP: spec.name, LABEL_SPEC: spec.digest()},
                network_mode="none", environment=dict(spec.env), **kw)
        except ImageNotFound:
            raise EngineError(f"{spec.name}: image {spec.image} is not loaded") from None
        except (DockerException, OSError) as exc:
            raise EngineError(f"creating {spec.container_name}: {exc}") from None
        return c.id

    def start(self, spec: AppSpec) -> int:
        """Start it; returns the pid of its first process (its network namespace)."""
        try:
            c = self.client.containers.get(spec.container_name)
            c.start()
            c.reload()
        except (DockerException, OSError) as exc:
            raise EngineError(f"starting {spec.container_name}: {exc}") from None
        return int(c.attrs.get("State", {}).get("Pid") or 0)

    def pid(self, spec: AppSpec) -> int:
        try:
            c = self.client.containers.get(spec.container_name)
        except NotFound:
            return 0
        except (DockerException, OSError) as exc:
            raise EngineError(f"inspecting {spec.container_name}: {exc}") from None
        return int(c.attrs.get("State", {}).get("Pid") or 0)

    def stats(self, container_id: str) -> dict:
        """The engine's one-shot stats document of a running container ({} if it has none)."""
        try:
            return self.client.api.stats(container_id, stream=False, one_shot=True) or {}
        except NotFound:
            return {}
        except (DockerException, OSError) as exc:
            raise EngineError(f"stats of {container_id[:12]}: {exc}") from None

    def remove(self, container_id: str) -> None:
        try:
            c = self.client.containers.get(container_id)
            if LABEL_APP not in c.labels:  # never someone else's, whatever asked
                raise EngineError(f"container {container_id[:12]} is not nsg's")
            c.remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            raise EngineError(f"removing {container_id[:12]}: {exc}") from None
