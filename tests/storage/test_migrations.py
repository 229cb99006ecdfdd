"""Alembic migrations build exactly the schema the table models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from bot.storage import models  # noqa: F401  (fills SQLModel.metadata)
from bot.storage.schema import create_schema


def test_migrations_match_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_upgrade_twice_is_harmless(engine):
    create_schema(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_workspace_rows_carry_team_id():
    deployment_wide = {"workspace", "schedulerlease"}
    for name, table in SQLModel.metadata.tables.items():
        if name in deployment_wide:
            continue
        assert "team_id" in table.columns, f"table {name} has no team_id column"
