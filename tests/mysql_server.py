"""A throwaway MariaDB server for tests: started once per session, deleted at the end.

The executor's MySQL/MariaDB promises only mean something against a real server, connected the
way users connect: as the owner, here ``root``. The server's data directory lives in a temporary
directory, it listens only on a Unix socket there (``--skip-networking``: no TCP port to collide
with other runs), and it is stopped and deleted when the session ends. When we are root it runs as
the ``mysql`` OS user (the Debian package creates it), so a file it could write lands nowhere a
root process could not already write.

CI installs the Debian package (``.ci/run``); when the binaries or the pymysql driver are missing
the fixture *fails* with a message saying how to install them, unless
``ROUTE_GRAPH_SKIP_MYSQL=1`` asks to skip explicitly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["SKIP_ENV", "SPIDER_MYSQL_SQL", "MariaDBServer", "mysql_missing_reason", "server_state"]

SKIP_ENV = "ROUTE_GRAPH_SKIP_MYSQL"
_SERVERS = ("mariadbd", "mysqld")  # Debian's mariadb-server ships both names (mysqld a link)
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])

# The hostile corpus's victim (t, ix_t_name, v_t, big) plus a small Spider-like concert database.
SPIDER_MYSQL_SQL = """
CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL);
CREATE INDEX ix_t_name ON t (name(10));
CREATE VIEW v_t AS SELECT id, name FROM t;
INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 3.0);
CREATE TABLE big (n INTEGER PRIMARY KEY);
INSERT INTO big SELECT seq FROM seq_1_to_3000;
CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, capacity INTEGER);
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (
  concert_id INTEGER PRIMARY KEY, concert_name TEXT, stadium_id INTEGER, year TEXT,
  FOREIGN KEY (stadium_id) REFERENCES stadium (stadium_id)
);
CREATE TABLE singer_in_concert (
  concert_id INTEGER, singer_id INTEGER, PRIMARY KEY (concert_id, singer_id),
  FOREIGN KEY (concert_id) REFERENCES concert (concert_id),
  FOREIGN KEY (singer_id) REFERENCES singer (singer_id)
);
INSERT INTO stadium VALUES (1, 'Stark''s Park', 10104), (2, 'Glebe Park', 3960);
INSERT INTO singer VALUES (1, 'Joe Sharp', 'Netherlands', 52), (2, 'Timbaland', 'United States', 32),
  (3, 'Justin Brown', 'France', 29), (4, 'Rose White', 'France', 41);
INSERT INTO concert VALUES (1, 'Auditions', 1, '2014'), (2, 'Super bootcamp', 2, '2015');
INSERT INTO singer_in_concert VALUES (1, 1), (1, 3), (2, 2), (2, 4);
"""


def _binary(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH)


def mysql_missing_reason() -> str | None:
    """None when the MariaDB server binaries and the pymysql driver are present, else what to do."""
    if _binary("mariadb-install-db") is None or not any(_binary(n) for n in _SERVERS):
        return (
            "MariaDB server binaries not found (mariadbd/mysqld, mariadb-install-db): install them "
            f"with `apt-get install -y mariadb-server` (.ci/run does), or set {SKIP_ENV}=1 to skip "
            "the live MySQL/MariaDB tests"
        )
    try:
        import pymysql  # noqa: F401
    except ImportError:
        return f"the pymysql driver is missing: pip install pymysql (or set {SKIP_ENV}=1)"
    return None


def server_state(engine, database: str) -> dict:
    """Everything model SQL could change: table contents (checksums and dumps) and server state."""
    with engine.connect() as conn:
        def q(sql: str):
            return conn.exec_driver_sql(sql).fetchall()

        return {
            "checksums": q("CHECKSUM TABLE t, big, stadium, singer, concert, singer_in_concert EXTENDED"),
            "t": q("SELECT * FROM t ORDER BY id"),
            "singer": q("SELECT * FROM singer ORDER BY singer_id"),
            "objects": q(
                "SELECT table_name, table_type, create_time FROM information_schema.tables "
                f"WHERE table_schema = '{database}' ORDER BY table_name"
            ),
            "indexes": q(
                "SELECT table_name, index_name, column_name FROM information_schema.statistics "
                f"WHERE table_schema = '{database}' ORDER BY 1, 2, 3"
            ),
            "routines": q(f"SELECT routine_name FROM information_schema.routines WHERE routine_schema = '{database}'"),
            "databases": q("SHOW DATABASES"),
            "users": q("SELECT user, host FROM mysql.user ORDER BY 1, 2"),
            "grants": q("SHOW GRANTS FOR root@localhost"),
            "globals": q(
                "SELECT @@GLOBAL.max_connections, @@GLOBAL.read_only, @@GLOBAL.general_log, "
                "@@GLOBAL.max_statement_time, @@GLOBAL.sql_mode"
            ),
        }


class MariaDBServer:
    """One server in a temporary directory; ``url(db)`` gives a root SQLAlchemy URL (Unix socket)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rgmy"))  # short: Unix socket paths max ~107 bytes
        self.data = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.log = self.root / "server.log"
        self._owner = pwd.getpwnam("mysql") if os.geteuid() == 0 else None
        self._process: subprocess.Popen | None = None

    def start(self) -> MariaDBServer:
        user = self._owner.pw_name if self._owner is not None else pwd.getpwuid(os.geteuid()).pw_name
        self.data.mkdir()
        if self._owner is not None:  # the server creates its socket and data files here
            for path in (self.root, self.data):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)
        server = next(_binary(n) for n in _SERVERS if _binary(n))
        try:
            subprocess.run(
                [_binary("mariadb-install-db"), "--no-defaults", f"--datadir={self.data}", f"--user={user}",
                 "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                check=True, capture_output=True, text=True, timeout=180,
            )
            with open(self.log, "wb") as log:
                self._process = subprocess.Popen(
                    [server, "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
                     "--skip-networking", f"--user={user}", f"--pid-file={self.root / 'mysqld.pid'}",
                     "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M", "--skip-log-bin",
                     "--innodb-flush-log-at-trx-commit=0", "--max-connections=60", "--skip-name-resolve",
                     "--character-set-server=utf8mb4"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            self._wait_ready(timeout=120)
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            self.stop()
            raise RuntimeError(f"could not start MariaDB: {detail}\n{log}") from exc
        return self

    def _wait_ready(self, timeout: float) -> None:
        import pymysql

        end = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the server exited with {self._process.returncode}")
            try:
                pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=2).close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > end:
                    raise RuntimeError(f"the server did not accept connections within {timeout} s") from None
                time.sleep(0.2)

    def url(self, database: str = "mysql") -> str:
        return f"mysql+pymysql://root@/{database}?unix_socket={self.socket}&charset=utf8mb4"

    def connect(self, database: str | None = None):
        """A pymysql connection as root (autocommit), for setting up and inspecting the server."""
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", database=database, autocommit=True)

    def create_database(self, name: str, script: str) -> str:
        """Create database ``name``, run ``script`` in it (as root) and return its URL."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE `{name}`")
                cursor.execute(f"USE `{name}`")
                for statement in filter(str.strip, script.split(";\n")):
                    cursor.execute(statement)
        finally:
            conn.close()
        return self.url(name)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # a clean shutdown; the directory goes anyway
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
