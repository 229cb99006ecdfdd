"""Alembic environment: runs migrations on the engine the bot passes in, or on a URL."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from bot.storage import models  # noqa: F401  (fills SQLModel.metadata)
from bot.storage.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def _include_name(name, type_, parent_names):  # type: ignore[no-untyped-def]
    # Tables owned by other libraries (APScheduler, Slack installation stores) are left alone.
    if type_ == "table":
        return name in target_metadata.tables
    return True


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_name=_include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
        if connection.in_transaction():
            connection.commit()


run_migrations_online()
