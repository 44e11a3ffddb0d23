"""Host settings: where things live on this machine, apart from the portable recipe.

Every field can be set from the environment with the QUANTGATE_ prefix (QUANTGATE_ARTIFACTS=/data/qg).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANTGATE_", extra="ignore")

    artifacts: Path = REPO_ROOT / "artifacts"
    envs: Path = REPO_ROOT / ".venvs"
    tracking_uri: str | None = None  # overrides the recipe's tracking.uri (e.g. a shared server)
    timeout_scale: float = Field(1.0, gt=0)  # multiplies every tool and server time limit (a slow host)

    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.artifacts.resolve() / 'mlflow.db'}"

    def mlflow_artifact_root(self) -> Path:
        return self.artifacts.resolve() / "mlflow-artifacts"
