"""The base of every config model: frozen, unknown fields refused."""

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
