"""Host settings: where things live on this machine, apart from the portable recipe.

Every field can be set from the environment with the QUANTGATE_ prefix (QUANTGATE_ARTIFACTS=/data/qg).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANTGATE_", extra="ignore")

    artifacts: Path = REPO_ROOT / "artifacts"
    envs: Path = REPO_ROOT / ".venvs"
    tracking_uri: str | None = None  # overrides the recipe's tracking.uri (e.g. a shared server)
    timeout_scale: float = Field(1.0, gt=0)  # multiplies every tool and server time limit (a slow host)
    # Servers' ports, e.g. "20000-20099" where a firewall allows only those; default: any free port.
    ports: tuple[int, int] | None = None

    @field_validator("ports", mode="before")
    @classmethod
    def _port_range(cls, value: object) -> object:
        if isinstance(value, str):
            low, sep, high = value.partition("-")
            if not (sep and low.strip().isdigit() and high.strip().isdigit()):
                raise ValueError(f"{value!r} is not a range like 20000-20099")
            value = (int(low), int(high))
        if value is not None and not (1024 <= value[0] <= value[1] <= 65535):
            raise ValueError(f"{value[0]}-{value[1]} is not within 1024-65535, low to high")
        return value

    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.artifacts.resolve() / 'mlflow.db'}"

    def mlflow_artifact_root(self) -> Path:
        return self.artifacts.resolve() / "mlflow-artifacts"
