"""Schema creation and upgrades through Alembic migrations."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlalchemy.orm import configure_mappers

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine | None = None, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest migration; safe to call on every start.

    It also sets up the ORM's mappings of the model classes. SQLAlchemy otherwise does
    that on a process's first query, so the first Slack request or the first mailbox of
    an import would wait for it (about 70 ms).
    """
    command.upgrade(alembic_config(engine), "head")
    import bot.storage.models  # noqa: F401 - the mapped classes must be defined first

    configure_mappers()
