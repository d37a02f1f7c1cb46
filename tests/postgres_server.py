"""A throwaway PostgreSQL 15 cluster for tests: started once per session, deleted at the end.

The executor's promises on Postgres only mean something against a real server, connected the
way issue 15's threat model says users connect: as the owner/superuser. The cluster lives in a
temporary directory, listens only on a Unix socket there (no TCP port to collide with other
runs), trusts local connections and is stopped and deleted when the session ends.

The server must run as the ``postgres`` OS user (it refuses to run as root). CI installs the
Debian packages (``.ci/run``); when the binaries are missing the fixture *fails* with a message
saying how to install them, unless ``ROUTE_GRAPH_SKIP_POSTGRES=1`` asks to skip explicitly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PG_BIN", "SPIDER_PG_SQL", "PostgresServer", "copy_sqlite_database", "postgres_missing_reason", "server_state"]

PG_BIN = Path(os.environ.get("ROUTE_GRAPH_PG_BIN", "/usr/lib/postgresql/15/bin"))
SKIP_ENV = "ROUTE_GRAPH_SKIP_POSTGRES"

# The hostile corpus's victim (t, ix_t_name, v_t, big) plus a small Spider-like concert database.
SPIDER_PG_SQL = """
CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL);
CREATE INDEX ix_t_name ON t (name);
CREATE VIEW v_t AS SELECT id, name FROM t;
INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 3.0);
CREATE TABLE big AS SELECT n FROM generate_series(1, 3000) AS g(n);
CREATE SEQUENCE seq_t;
CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, capacity INTEGER);
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (
  concert_id INTEGER PRIMARY KEY, concert_name TEXT, stadium_id INTEGER REFERENCES stadium, year TEXT
);
CREATE TABLE singer_in_concert (
  concert_id INTEGER REFERENCES concert, singer_id INTEGER REFERENCES singer,
  PRIMARY KEY (concert_id, singer_id)
);
INSERT INTO stadium VALUES (1, 'Stark''s Park', 10104), (2, 'Glebe Park', 3960);
INSERT INTO singer VALUES (1, 'Joe Sharp', 'Netherlands', 52), (2, 'Timbaland', 'United States', 32),
  (3, 'Justin Brown', 'France', 29), (4, 'Rose White', 'France', 41);
INSERT INTO concert VALUES (1, 'Auditions', 1, '2014'), (2, 'Super bootcamp', 2, '2015');
INSERT INTO singer_in_concert VALUES (1, 1), (1, 3), (2, 2), (2, 4);
CREATE EXTENSION adminpack;
CREATE EXTENSION dblink;
"""


def postgres_missing_reason() -> str | None:
    """None when the PostgreSQL server binaries and the psycopg driver are present, else what to do."""
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / name).is_file()]
    if missing:
        return (
            f"PostgreSQL server binaries not found in {PG_BIN} ({', '.join(missing)}): install them "
            "with `apt-get install -y postgresql postgresql-contrib` (.ci/run does), point "
            f"ROUTE_GRAPH_PG_BIN at them, or set {SKIP_ENV}=1 to skip the live Postgres tests"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"the psycopg driver is missing: pip install 'psycopg[binary]' (or set {SKIP_ENV}=1)"
    return None


def server_state(engine) -> dict:
    """Everything model SQL could change on the server: table contents and server-side state."""
    with engine.connect() as conn:
        def q(sql: str):
            return conn.exec_driver_sql(sql).scalar()

        return {
            "t": q("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM t"),
            "singer": q("SELECT md5(string_agg(s::text, '|' ORDER BY singer_id)) FROM singer s"),
            "relations": q("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"),
            "functions": q("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"),
            "roles": q("SELECT count(*) FROM pg_roles"),
            "large_objects": q("SELECT count(*) FROM pg_largeobject_metadata"),
            "slots": q("SELECT count(*) FROM pg_replication_slots"),
            "origins": q("SELECT count(*) FROM pg_replication_origin"),
            "advisory_locks": q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
            "sequence": q("SELECT last_value FROM seq_t"),
            "stats_reset": q("SELECT stats_reset IS NULL FROM pg_stat_database WHERE datname = current_database()"),
            "work_mem": q("SELECT setting FROM pg_settings WHERE name = 'work_mem'"),
            "auto_conf": q("SELECT count(*) FROM pg_file_settings WHERE right(sourcefile, 9) = 'auto.conf'"),
            "acl": q("SELECT relacl::text FROM pg_class WHERE relname = 't'"),
            "comment": q("SELECT obj_description('t'::regclass)"),
        }


class PostgresServer:
    """One cluster in a temporary directory; ``url(db)`` gives a superuser SQLAlchemy URL."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rgpg"))  # short: Unix socket paths max ~107 bytes
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "server.log"
        self._owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.started = False

    # -- running as the postgres OS user when we are root
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self._owner is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        if self._owner is not None:
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
        os.chmod(self.root, 0o700)
        try:
            self._run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--no-locale", "--no-sync")
            options = (
                f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
                "-c fsync=off -c max_connections=60 -c wal_level=logical -c max_replication_slots=4 "
                "-c shared_buffers=16MB -c logging_collector=off"
            )
            self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60",
                      "start")
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            self.stop()
            raise RuntimeError(f"could not start PostgreSQL: {exc.stderr or exc.stdout}\n{log}") from exc
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def psql_conninfo(self, database: str = "postgres") -> str:
        return f"host={self.socket_dir} user=postgres dbname={database}"

    def create_database(self, name: str, script: str) -> str:
        """Create database ``name``, run ``script`` in it (as superuser) and return its URL."""
        import psycopg

        with psycopg.connect(self.psql_conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self.psql_conninfo(name), autocommit=True) as conn:
            conn.execute(script)
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


def copy_sqlite_database(sqlite_path: Path, pg_url: str) -> None:
    """Load a Spider SQLite database into PostgreSQL as a user would port it: lower-case, unquoted
    names (Spider's SQL spells them in any case), declared types mapped to INTEGER/REAL/TEXT, keys kept."""
    import sqlalchemy
    from sqlalchemy import Column, Float, ForeignKeyConstraint, Integer, MetaData, Table, Text

    source = sqlalchemy.create_engine(f"sqlite:///file:{sqlite_path}?mode=ro&uri=true")
    found = MetaData()
    found.reflect(source)
    target = MetaData()

    def kind(column_type: object) -> type:
        name = str(column_type).lower()
        return Integer if "int" in name else Float if any(t in name for t in ("real", "float", "double", "numeric")) else Text

    for table in found.sorted_tables:
        columns = [Column(c.name.lower(), kind(c.type), primary_key=c.primary_key) for c in table.columns]
        fks = [ForeignKeyConstraint([e.parent.name.lower() for e in fk.elements],
                                    [f"{fk.referred_table.name.lower()}.{e.column.name.lower()}" for e in fk.elements])
               for fk in table.foreign_key_constraints]
        Table(table.name.lower(), target, *columns, *fks)
    engine = sqlalchemy.create_engine(pg_url)
    try:
        target.create_all(engine)
        with source.connect() as src, engine.begin() as dst:
            for table in found.sorted_tables:
                rows = [dict(zip([c.lower() for c in r._fields], r)) for r in src.execute(table.select())]
                if rows:
                    dst.execute(target.tables[table.name.lower()].insert(), rows)
    finally:
        engine.dispose()
        source.dispose()
