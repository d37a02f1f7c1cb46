"""The executor against a live PostgreSQL 15, connected as superuser (issue 15's threat model).

Every guarantee is measured on a throwaway server (``postgres_server`` in conftest.py) with two
engines: SQLAlchemy's default (the driver opens transactions) and ``isolation_level="AUTOCOMMIT"``
(no transaction unless the executor opens one itself).
"""

from __future__ import annotations

import pytest
import sqlalchemy

from route_graph.database import Database, open_database
from route_graph.execution import execute_sql
from tests.postgres_server import SPIDER_PG_SQL

ENGINE_KINDS = ["default", "autocommit"]


@pytest.fixture(scope="module")
def pg_url(postgres_server) -> str:
    return postgres_server.create_database("spider", SPIDER_PG_SQL)


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def pg_db(request, pg_url: str) -> Database:
    kwargs = {"isolation_level": "AUTOCOMMIT"} if request.param == "autocommit" else {}
    engine = sqlalchemy.create_engine(pg_url, **kwargs)
    yield open_database(engine)
    engine.dispose()


def test_server_is_live_and_superuser(pg_db: Database) -> None:
    assert pg_db.dialect == "postgres"
    assert {"singer", "concert", "t"} <= {t.name for t in pg_db.schema.tables}
    result = execute_sql(pg_db, "SELECT name FROM singer WHERE country = 'France' ORDER BY name")
    assert result.ok, result.error
    assert result.rows == [("Justin Brown",), ("Rose White",)]
    with pg_db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_setting('is_superuser')").scalar() == "on"
        extensions = {r[0] for r in conn.exec_driver_sql("SELECT extname FROM pg_extension")}
    assert {"adminpack", "dblink"} <= extensions
