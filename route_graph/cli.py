"""``route-sql``: ask a question (``ask``), evaluate (``eval``), fine-tune (``finetune``)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from route_graph.demo import DEMO_QUESTIONS, demo_database_path
from route_graph.errors import RouteGraphError
from route_graph.graph.context import RouteConfig
from route_graph.graph.extras import parse_overrides
from route_graph.graph.stages import (
    CONTINUE_WRITE,
    FINALIZE,
    GENERATE,
    NOISE_CORRECT,
    RETRIEVE_VALUES,
    SCHEMA_LINK,
    SELF_CONSISTENCY,
    STAGES,
)

if TYPE_CHECKING:
    from route_graph.graph.state import TraceEntry

__all__ = ["format_table", "format_trace", "main"]

_STAGE_LABELS = {s.node: s.label for s in STAGES if s.label}


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 40) -> str:
    """Plain-text table of a result (values cut to ``max_width`` characters)."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    header = [cell(c) for c in columns]
    widths = [max([len(header[i])] + [len(r[i]) for r in body]) for i in range(len(header))]
    line = lambda values: " | ".join(v.ljust(w) for v, w in zip(values, widths))
    out = [line(header), "-+-".join("-" * w for w in widths)] + [line(r) for r in body]
    return "\n".join(out)


def format_trace(trace: Sequence[TraceEntry]) -> str:
    """One line per stage: what it proposed, whether it executed, whether it was taken."""
    lines = []
    for entry in trace:
        stage = entry["stage"]
        if stage == FINALIZE.node:
            extra = " (fallback to an earlier executable SQL)" if entry.get("fallback") else ""
            vote = entry.get("vote")
            if vote:
                groups = " | ".join(f"{'+'.join(g['stages'])}: {g['rows']} rows" for g in vote["groups"])
                extra += f"; vote: {groups}"
            lines.append(f"  finalize        answer from: {entry.get('winner')}{extra}")
            continue
        if stage == SELF_CONSISTENCY.node:
            failed = f"; {entry['failed_calls']} failed call(s)" if entry.get("failed_calls") else ""
            cost = f"{entry.get('llm_calls', 0)} call(s), {entry.get('seconds', 0):.1f}s"
            lines.append(
                f"  self_consistency {entry.get('samples')} samples at temperature {entry.get('temperature')}: "
                f"{entry.get('executed_samples')} execute, {entry.get('distinct_results')} distinct result(s)"
                f"{failed}  [{cost}]"
            )
            for sample in entry.get("proposals", []):
                status = "executes" if sample.get("executed") else "fails"
                lines.append(f"      {sample['name']} ({status}): {sample.get('sql') or sample.get('model_error')}")
            continue
        if stage == RETRIEVE_VALUES.node:
            found = ", ".join(f"{m['table']}.{m['column']}: {m['value']!r}" for m in entry.get("value_matches", []))
            error = f"; failed: {entry['value_error']}" if entry.get("value_error") else ""
            lines.append(f"  {stage:<15} {found or 'no values matched'}{error}  [{entry.get('value_seconds', 0):.1f}s]")
            continue
        if entry.get("mode") == "skipped":
            lines.append(f"  {stage:<15} skipped ({entry.get('reason')})")
            continue
        status = "executes" if entry.get("executed") else f"fails: {entry.get('error')}"
        if entry.get("proposed_sql") is None:
            status = "no SQL proposed"
        bits = [f"  {stage:<15} {status}"]
        if stage == SCHEMA_LINK.node:
            bits.append(f"tables kept: {', '.join(entry.get('links', {})) or 'all (fallback)'}")
            if entry.get("hallucinated"):
                bits.append(f"dropped unknown names: {', '.join(entry['hallucinated'])}")
        if stage == NOISE_CORRECT.node:
            mode = entry.get("mode")
            bits.append(f"repair ({entry.get('problem')})" if mode == "repair" else f"verdict: {entry.get('verdict')}")
        if entry.get("requalified"):
            fix = entry["requalified"]
            bits.append(f"re-qualified columns: {'runs' if fix.get('accepted') else 'still fails'}")
        if stage == CONTINUE_WRITE.node:
            bits.append(f"reason: {entry.get('reason')}")
        if "accepted" in entry and stage != GENERATE.node:
            bits.append("taken" if entry["accepted"] else "not taken")
        cost = f"{entry.get('llm_calls', 0)} call(s), {entry.get('seconds', 0):.1f}s"
        lines.append("; ".join(bits) + f"  [{cost}]")
        if entry.get("proposed_sql") and stage != FINALIZE.node:
            lines.append(f"      {entry['proposed_sql']}")
    return "\n".join(lines)


class _Progress:
    """A spinner on stderr naming the stage the model is working on."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.label = "loading the model"
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _spin(self) -> None:
        frames = "|/-\\"
        i = 0
        while not self._stop.wait(0.2):
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"\r\033[K{frames[i % 4]} {self.label}… {elapsed:5.1f}s")
            self.stream.flush()
            i += 1

    def done(self, node: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r\033[K  ✓ {_STAGE_LABELS.get(node, node)} ({elapsed:.1f}s)\n")
        following = {
            RETRIEVE_VALUES.node: SCHEMA_LINK.node, SCHEMA_LINK.node: GENERATE.node, GENERATE.node: NOISE_CORRECT.node,
        }.get(node, FINALIZE.node)
        self.label = _STAGE_LABELS.get(following, "working")


def _table_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ask(args: argparse.Namespace) -> int:
    from route_graph.models.spec import parse_model_spec
    from route_graph.sql.opening import open_database

    # Every argument is checked before the model (seconds to minutes) or even the graph (a second
    # of imports) loads: a wrong path, table, spec, field or an over-long question fails at once.
    db = args.db or str(demo_database_path())
    question = " ".join(args.question) if args.question else DEMO_QUESTIONS[0]
    config = RouteConfig(prompt_style=args.prompt_style).with_stages(args.stages)
    overrides, extras = parse_overrides(args.config_overrides)  # an extra's former field adds the extra
    config = replace(config, **overrides)
    config.check_input(question, args.hint)
    parse_model_spec(args.model)
    database = open_database(
        db, schema=args.schema, include_tables=_table_list(args.include_tables), ignore_tables=_table_list(args.ignore_tables)
    )
    from route_graph.graph import build_route_graph
    from route_graph.models import load_chat_model

    show_progress = not args.json and not args.quiet and sys.stderr.isatty()
    with _Progress(sys.stderr, show_progress) as progress:
        if not args.json and not args.quiet:
            print(f"Database: {db}\nQuestion: {question}", file=sys.stderr)
        llm = load_chat_model(args.model, max_new_tokens=args.max_new_tokens)
        graph = build_route_graph(llm, database, config, extras=extras)
        first = RETRIEVE_VALUES if any(e.name == RETRIEVE_VALUES.extra for e in extras) else None
        progress.label = _STAGE_LABELS[(first or (SCHEMA_LINK if config.schema_linking else GENERATE)).node]
        state: dict[str, Any] = {}
        for mode, chunk in graph.stream({"question": question, "hint": args.hint}, stream_mode=["updates", "values"]):
            if mode == "updates":
                for node in chunk:
                    progress.done(node)
            else:
                state = chunk
    result = state.get("result", {})
    if args.json:
        keys = ("question", "sql", "stage", "result", "links", "sql_by_stage", "trace")
        print(json.dumps({k: state.get(k) for k in keys}, indent=2, default=str))
        return 0 if result.get("ok") else 1
    print(f"\nSQL:\n  {state.get('sql') or '(none)'}\n")
    if result.get("ok"):
        rows = result.get("rows", [])
        print(format_table(result.get("columns", []), rows[: args.show_rows]))
        more = result.get("row_count", len(rows)) - min(len(rows), args.show_rows)
        suffix = " (truncated at the row cap)" if result.get("truncated") else ""
        print(f"({result.get('row_count', len(rows))} row(s){suffix}{'; ' + str(more) + ' not shown' if more > 0 else ''})")
    else:
        print(f"The SQL does not execute: {result.get('error')}")
    if not args.quiet:
        print("\nTrace:\n" + format_trace(state.get("trace", [])))
    return 0 if result.get("ok") else 1


EXIT_CODES = """exit codes:
  0    the answer's SQL executes
  1    an answer was produced but its SQL does not execute
  2    bad input or a failure to fix (database, model, config, question): one line on stderr says what to do
  130  interrupted"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("route-graph")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown (not installed)"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="route-sql",
        description="ROUTE text-to-SQL with a local or served model, as a LangGraph graph.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer a question over a database", epilog=EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ask.add_argument("question", nargs="*", help=f"the question (default: {DEMO_QUESTIONS[0]!r})")
    ask.add_argument("--db", help="SQLite path or SQLAlchemy URL (default: the bundled demo book-shop database)")
    ask.add_argument(
        "--model",
        default=None,
        help="model spec: qwen2.5-coder-0.5b (default, offline), BASE+ADAPTER_DIR[@SCALE], a .gguf file or HF "
        "model directory, hf:ORG/NAME, openai:http://HOST:PORT/v1#MODEL_NAME, or PROVIDER:MODEL "
        "(e.g. openai:gpt-4o-mini, anthropic:claude-haiku-4-5, ollama:qwen2.5-coder:0.5b)",
    )
    ask.add_argument("--hint", default=None, help="extra knowledge for the question (BIRD's evidence)")
    ask.add_argument("--stages", default=None, help="MCP stages to run, subset of sl,nc,cw,rescue (default: all)")
    ask.add_argument("--schema", default=None, help="PostgreSQL/DuckDB schema to read (default: the connection's)")
    ask.add_argument("--include-tables", default=None, metavar="T1,T2",
                     help="only these tables/views are shown to the model (comma-separated)")
    ask.add_argument("--ignore-tables", default=None, metavar="T1,T2",
                     help="tables/views never shown to the model (comma-separated)")
    ask.add_argument("--set", dest="config_overrides", action="append", default=[], metavar="FIELD=VALUE",
                     help="a RouteConfig field, e.g. --set nc_verdict=true, or an extra's setting: "
                     "--set self_consistency=5, --set value_retrieval=true (repeatable)")
    ask.add_argument("--prompt-style", choices=["zero_shot", "few_shot"], default="zero_shot")
    ask.add_argument("--max-new-tokens", type=int, default=384)
    ask.add_argument("--show-rows", type=int, default=20, help="result rows to print")
    ask.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    ask.add_argument("--quiet", action="store_true", help="only the SQL and the result")
    ask.set_defaults(handler=_ask)
    for name, help_text in (("eval", "evaluate on a Spider/BIRD-format dataset"), ("finetune", "MSFT fine-tuning")):
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``route-sql`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "eval":
            from route_graph.evaluation.cli import main as eval_main

            return eval_main(argv[1:])
        if argv and argv[0] == "finetune":
            try:
                from finetune.cli import main as finetune_main
            except ImportError as exc:
                raise RouteGraphError(
                    f"Fine-tuning needs the finetune extra: pip install 'route-graph[finetune]' ({exc})."
                ) from exc
            return finetune_main(argv[1:])
        args = _build_parser().parse_args(argv)
        return int(args.handler(args))
    except RouteGraphError as exc:
        print(f"route-sql: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("route-sql: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
