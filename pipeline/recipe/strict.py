"""The base of every recipe model: unknown keys are rejected, and a loaded recipe cannot change."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
