"""Shared fixtures: tiny SQLite databases made per test, and the shared Spider data when present."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Mixed-case names, a keyword column, a name with a space, a blank type, a composite key and a
# foreign key written in the wrong case: the oddities real (Spider) databases have.
SHOP_SQL = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, "Join Date" TEXT);
CREATE TABLE orders (
  order_id INTEGER PRIMARY KEY,
  customer_id INTEGER REFERENCES customers(id),
  total REAL,
  note TEXT,
  "order" INTEGER
);
CREATE TABLE Products (ProductID INTEGER, Name varchar(30), price, PRIMARY KEY (ProductID));
CREATE TABLE order_items (
  order_id INTEGER,
  product_id INTEGER,
  qty INTEGER,
  PRIMARY KEY (order_id, product_id),
  FOREIGN KEY (order_id) REFERENCES orders(order_id),
  FOREIGN KEY (product_id) REFERENCES products(productid)
);
INSERT INTO customers VALUES (1, 'Ada', 'London', '2020-01-01'), (2, 'Grace', NULL, '2021-02-03'),
  (3, 'Linus', 'Helsinki', NULL);
INSERT INTO orders VALUES (10, 1, 25.5, 'first order', 1), (11, 1, 7.0, NULL, 2),
  (12, 2, 100.0, 'x' || printf('%.200c', 'y'), 1), (13, 3, 0.0, 'tab	and
newline', 1);
INSERT INTO Products VALUES (100, 'Widget', 2.5), (101, 'Gadget', NULL), (102, 'Gizmo', 9);
INSERT INTO order_items VALUES (10, 100, 2), (10, 101, 1), (11, 102, 3), (12, 100, 40), (13, 101, 1);
"""


def make_sqlite(path: Path, script: str) -> Path:
    """Create a SQLite file at ``path`` from ``script`` (committed and closed)."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(script)
        conn.commit()
    finally:
        conn.close()
    return path


@pytest.fixture
def make_db(tmp_path: Path):
    """Factory: ``make_db(script, name="db.sqlite")`` builds a SQLite file in tmp_path."""

    def make(script: str, name: str = "db.sqlite") -> Path:
        return make_sqlite(tmp_path / name, script)

    return make


@pytest.fixture
def shop_db_path(tmp_path: Path) -> Path:
    """A 4-table shop database (customers, orders, Products, order_items) in tmp_path."""
    return make_sqlite(tmp_path / "shop.sqlite", SHOP_SQL)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data directory ($ROUTE_GRAPH_DATA, else ../shared/data next to the repo)."""
    env = os.environ.get("ROUTE_GRAPH_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set ROUTE_GRAPH_DATA to its location)")
    return path


def _live_server(name: str, skip_env: str, missing_reason: Any, start: Any) -> Iterator[Any]:
    """Start a throwaway server for the session; fail (not skip) without its binaries."""
    if os.environ.get(skip_env) == "1":
        pytest.skip(f"live {name} tests skipped because {skip_env}=1 is set")
    reason = missing_reason()
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    server = start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A live throwaway PostgreSQL 15 cluster (see tests/postgres_server.py), superuser access.

    Fails when the server binaries are missing, so CI cannot pass without the live tests; skips
    only when ROUTE_GRAPH_SKIP_POSTGRES=1 is set explicitly.
    """
    from tests.postgres_server import SKIP_ENV, PostgresServer, postgres_missing_reason

    yield from _live_server("PostgreSQL", SKIP_ENV, postgres_missing_reason, lambda: PostgresServer().start())


@pytest.fixture(scope="session")
def mysql_server():
    """A live throwaway MariaDB server (see tests/mysql_server.py), root access over a Unix socket.

    Fails when the server binaries or pymysql are missing, so CI cannot pass without the live
    tests; skips only when ROUTE_GRAPH_SKIP_MYSQL=1 is set explicitly.
    """
    from tests.mysql_server import SKIP_ENV, MariaDBServer, mysql_missing_reason

    yield from _live_server("MySQL/MariaDB", SKIP_ENV, mysql_missing_reason, lambda: MariaDBServer().start())


def pytest_collection_modifyitems(config, items) -> None:
    """Run the vLLM server tests first. Two vLLM servers (~5 GB each) run at once in them; later
    in the session the test process itself holds several in-process models, and on a 24 GB
    machine the two together were OOM-killed (2026-12-01). Order is otherwise unchanged."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_openai_server.py") else 1)
