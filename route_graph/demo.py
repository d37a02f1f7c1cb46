"""A small demo SQLite database (a book shop), generated on first use, so ``route-sql ask`` needs nothing else."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from route_graph._cache import model_cache_dir

__all__ = ["DEMO_QUESTIONS", "demo_database_path"]

DEMO_QUESTIONS = [
    "How many customers are from Germany?",
    "What is the title of the most expensive book?",
    "List the names of customers who ordered a book written by Jane Austen.",
    "How many books has each author written? Show the author name and the count.",
]

_SCHEMA = """
CREATE TABLE author (
  author_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT
);
CREATE TABLE book (
  book_id INTEGER PRIMARY KEY,
  title TEXT NOT NULL,
  author_id INTEGER NOT NULL REFERENCES author(author_id),
  genre TEXT,
  price REAL,
  published_year INTEGER
);
CREATE TABLE customer (
  customer_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT,
  joined_date TEXT
);
CREATE TABLE purchase (
  purchase_id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customer(customer_id),
  book_id INTEGER NOT NULL REFERENCES book(book_id),
  quantity INTEGER NOT NULL,
  purchase_date TEXT
);
"""

_AUTHORS = [
    (1, "Jane Austen", "United Kingdom"),
    (2, "Leo Tolstoy", "Russia"),
    (3, "Toni Morrison", "United States"),
    (4, "Haruki Murakami", "Japan"),
    (5, "Chimamanda Ngozi Adichie", "Nigeria"),
]
_BOOKS = [
    (1, "Pride and Prejudice", 1, "Romance", 9.99, 1813),
    (2, "Emma", 1, "Romance", 8.50, 1815),
    (3, "War and Peace", 2, "Historical", 15.00, 1869),
    (4, "Anna Karenina", 2, "Romance", 12.75, 1878),
    (5, "Beloved", 3, "Historical", 11.20, 1987),
    (6, "Song of Solomon", 3, "Literary", 10.40, 1977),
    (7, "Kafka on the Shore", 4, "Fantasy", 13.60, 2002),
    (8, "Norwegian Wood", 4, "Literary", 9.30, 1987),
    (9, "Half of a Yellow Sun", 5, "Historical", 14.10, 2006),
    (10, "Americanah", 5, "Literary", 16.90, 2013),
]
_CUSTOMERS = [
    (1, "Anna Schmidt", "Germany", "2021-03-14"),
    (2, "Luca Rossi", "Italy", "2020-11-02"),
    (3, "Sofia Müller", "Germany", "2022-06-21"),
    (4, "James Smith", "United States", "2019-01-30"),
    (5, "Yuki Tanaka", "Japan", "2023-02-11"),
    (6, "Chloe Martin", "France", "2021-08-05"),
    (7, "Jonas Weber", "Germany", "2024-04-17"),
]
_PURCHASES = [
    (1, 1, 1, 1, "2023-01-05"),
    (2, 1, 7, 2, "2023-02-10"),
    (3, 2, 3, 1, "2023-02-14"),
    (4, 3, 2, 1, "2023-03-01"),
    (5, 4, 5, 3, "2023-03-22"),
    (6, 5, 7, 1, "2023-04-02"),
    (7, 5, 8, 2, "2023-04-02"),
    (8, 6, 10, 1, "2023-05-19"),
    (9, 7, 9, 1, "2023-06-07"),
    (10, 4, 1, 1, "2023-06-30"),
]


def demo_database_path(directory: str | os.PathLike[str] | None = None) -> Path:
    """Path of the demo database, created (atomically) if it does not exist yet."""
    folder = Path(directory) if directory is not None else model_cache_dir()
    path = folder / "demo_bookshop.sqlite"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".sqlite.tmp")
    os.close(fd)
    try:
        with sqlite3.connect(tmp) as conn:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO author VALUES (?, ?, ?)", _AUTHORS)
            conn.executemany("INSERT INTO book VALUES (?, ?, ?, ?, ?, ?)", _BOOKS)
            conn.executemany("INSERT INTO customer VALUES (?, ?, ?, ?)", _CUSTOMERS)
            conn.executemany("INSERT INTO purchase VALUES (?, ?, ?, ?, ?)", _PURCHASES)
        conn.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
