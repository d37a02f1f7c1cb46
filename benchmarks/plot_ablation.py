"""The README's evaluation plots, with 95% confidence intervals, from an ablation run on disk.

    python benchmarks/plot_ablation.py runs/ablation-400-c --out docs/images

RUN is a ``benchmarks/ablation.py`` output directory (its ``mcp/`` run is used) or one run
directory (``run.json`` + ``predictions.jsonl``). A run still in progress or stopped part-way is
plotted on the questions answered so far (the titles say n). Nothing is run and nothing is
written into RUN. It writes into ``--out``:

* ``eval_gain_ci.png``: each variant's EX minus the single prompt's (the MCP draft) on the same
  questions, with the paired bootstrap 95% CI and the exact McNemar p;
* ``eval_ex_by_variant_ci.png``: EX per cumulative variant (single prompt, +SL, +SL+NC, full
  MCP), with 95% Wilson intervals;
* ``eval_ex_by_hardness_ci.png``: the run's answer (full MCP) by Spider hardness, with 95% Wilson
  intervals;

and prints the numbers and the Markdown that shows the plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from route_graph.evaluation.report import (
    CI_PLOTS,
    ci_plot_data,
    pct,
    run_caption,
    write_ci_plots,
)
from route_graph.evaluation.summary import read_predictions

__all__ = ["find_run", "footnote", "main"]


def find_run(path: Path) -> Path:
    """The run directory (holding run.json) of an ablation output directory or of a run itself."""
    for candidate in (path, path / "mcp"):
        if (candidate / "run.json").is_file():
            return candidate
    raise SystemExit(f"{path} holds no run.json (nor {path / 'mcp'}): give an ablation or eval output directory.")


def footnote(settings: dict) -> str:
    """The run's mode, stages and --set overrides, for the bottom of each plot."""
    parts = [f"route-sql eval --mode {settings.get('mode', 'mcp')}"]
    if settings.get("mode", "mcp") == "mcp":
        parts.append(f"stages {settings.get('stages_effective', 'sl,nc,cw')}")
    parts += [f"--set {o}" for o in settings.get("config_overrides") or ()]
    return "Run: " + ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="ablation output directory (uses its mcp/ run) or a run directory")
    p.add_argument("--out", default=str(REPO_ROOT / "docs" / "images"), help="where the PNGs go (default docs/images)")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--resamples", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = p.parse_args(list(argv) if argv is not None else None)

    run_dir = find_run(Path(args.run))
    out = Path(args.out)
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise SystemExit("--out must not be inside the run directory (runs are read, never written).")
    settings = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("settings") or {}
    records = sorted(read_predictions(run_dir / "predictions.jsonl"), key=lambda r: r["id"])
    stages = str(settings.get("stages_effective") or "sl,nc,cw").split(",") if settings.get("mode", "mcp") == "mcp" else ()
    data = ci_plot_data(records, stages, resamples=args.resamples, seed=args.seed)
    if not data["n"]:
        raise SystemExit(f"{run_dir / 'predictions.jsonl'} holds no scored question yet.")
    caption = run_caption(settings, data["n"])
    names = write_ci_plots(data, out, subtitle=run_caption(settings, data["n"], sep="\n"),
                           footnote=footnote(settings), dpi=args.dpi)

    print(f"{run_dir}: {caption}")
    for v in data["variants"]:
        print(f"  {v['variant']:<28} EX {pct(v['ex'])}% (95% Wilson CI {pct(v['ci_low'])}–{pct(v['ci_high'])})")
    for d in data["differences"]:
        print(f"  {d['variant']:<28} vs {d['vs']}: {pct(d['gain'])} points (paired bootstrap 95% CI "
              f"{pct(d['ci_low'])} to {pct(d['ci_high'])}), McNemar p = {d['p_value']:.3g}")
    for h in data["hardness"]:
        print(f"  {h['hardness']:<28} n={h['n']:<4} EX {pct(h['ex'])}% (95% CI {pct(h['ci_low'])}–{pct(h['ci_high'])})")
    print("\nWritten:", ", ".join(str(out / n) for n in names))
    try:
        rel = os.path.relpath(out.resolve(), REPO_ROOT)
    except ValueError:
        rel = str(out)
    alt = {CI_PLOTS[0]: "EX gain over the single prompt with paired 95% CIs",
           CI_PLOTS[1]: "EX per ablation variant with 95% CIs", CI_PLOTS[2]: "EX by Spider hardness with 95% CIs"}
    print("\nMarkdown (paths relative to the repository root):\n")
    for name in names:
        print(f"![{alt.get(name, name)}]({Path(rel, name).as_posix()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
