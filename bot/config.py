"""Settings from environment variables, checked once at start."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError


def default_database_url() -> str:
    data_dir = Path(platformdirs.user_data_dir("crm-bot", appauthor=False))
    return f"sqlite:///{data_dir / 'crm-bot.db'}"


class Settings(BaseSettings):
    """Every setting the bot reads; environment variable names are the field names in upper case."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    database_url: str = Field(default_factory=default_database_url)
    log_level: str = "WARNING"

    # Strength score (see docs/strength.md).
    strength_half_life_days: float = Field(default=180.0, gt=0)
    strength_weight_outbound: float = Field(default=2.0, ge=0)
    strength_weight_inbound: float = Field(default=1.0, ge=0)
    strength_weight_cc: float = Field(default=0.5, ge=0)
    strength_one_way_factor: float = Field(default=0.05, ge=0, le=1)
    strength_scale: float = Field(default=6.0, gt=0)

    # Reading mail.
    store_subjects: bool = False
    fold_plus_addresses: bool = False
    bulk_recipient_threshold: int = Field(default=20, ge=1)
    thread_window_days: int = Field(default=30, ge=1)
    freemail_domains_extra: str = ""  # comma-separated domains added to the bundled list
    internal_domains: str = ""  # comma-separated domains of the owners' own organisation

    # Slack.
    slack_bot_token: str | None = None
    slack_app_token: str | None = None
    slack_signing_secret: str | None = None
    slack_api_url: str | None = None

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        name = value.upper()
        if name not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}; use DEBUG, INFO, WARNING or ERROR")
        return name

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise ValueError(
                f"unsupported DATABASE_URL scheme in {value.split(':', 1)[0]!r}; "
                "use sqlite:///path or postgresql+psycopg://user@host/db"
            )
        return value

    def extra_freemail(self) -> set[str]:
        return {d.strip().lower() for d in self.freemail_domains_extra.split(",") if d.strip()}

    def extra_internal(self) -> set[str]:
        return {d.strip().lower() for d in self.internal_domains.split(",") if d.strip()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Load settings once; raise ConfigError with one line per invalid variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
