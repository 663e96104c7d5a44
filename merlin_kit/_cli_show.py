"""What the command line shows a person: the backtest report, the results tables, the strategy schema.

``merlin-kit strategies`` and ``merlin-kit params STRATEGY`` answer a new user's
first question, which names ``--params`` (CLI) or ``param_ranges`` (API) accept and
what the defaults are, from the strategy's schema
(:meth:`~merlin_kit.strategies.Strategy.describe`), so a user strategy gets them too.
Tables fit the terminal when there is one, and stay whole in a pipe or a file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from typing import Any

from .strategies import get_strategy, list_strategies


def _range_text(row: dict[str, Any]) -> str:
    if row["choices"] is not None:
        return row["choices"]
    if row["opt_low"] is None or row["opt_high"] is None:
        return ""
    fmt = (lambda v: str(int(v))) if row["type"] == "int" else (lambda v: f"{v:g}")
    return f"{fmt(row['opt_low'])}:{fmt(row['opt_high'])}:{fmt(row['opt_step'] or 1)}"


def cmd_strategies(args: argparse.Namespace) -> int:
    """One line per strategy usable as ``--strategy``: id, name, parameter count, how many are optimised by default."""
    rows = []
    for spec in list_strategies():
        strategy = get_strategy(spec)
        rows.append({"id": spec, "name": type(strategy).name or type(strategy).__name__,
                     "params": len(strategy.params), "optimized": sum(p.optimize for p in strategy.params)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["id"]) for r in rows)
    for r in rows:
        print(f"{r['id']:<{width}}  {r['params']:>3} parameters, {r['optimized']:>3} optimised by default  {r['name']}")
    print("\nParameters of one: merlin-kit params STRATEGY")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """The parameter schema of one strategy: name, type, default, default search range, optimised by default."""
    strategy = get_strategy(args.strategy)
    table = strategy.describe()
    if args.json:
        print(table.to_json(orient="records", indent=2))
        return 0
    rows = table.to_dict("records")
    cells = [(r["name"], r["type"], str(r["default"]), _range_text(r), "yes" if r["optimized"] else "",
              r["description"]) for r in rows]
    head = ("name", "type", "default", "search range (min:max:step or choices)", "optimised", "description")
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) for i in range(5)]
    limit = shutil.get_terminal_size((0, 0)).columns  # 0: not a terminal (a pipe, a file): lines stay whole

    def line(values: tuple[str, ...]) -> str:
        text = "  ".join(f"{v:<{w}}" for v, w in zip(values[:5], widths)) + "  " + values[5]
        return text if not limit or len(text) <= limit else text[: max(limit - 1, 20)] + "…"

    print(f"{strategy.id}: {len(rows)} parameters")
    print(line(head))
    for c in cells:
        print(line(c))
    print()
    for note in ("'optimised' = searched when no parameter is named (optimize without --params / param_ranges).",
                 "--params NAME (its search range above), NAME=min:max:step or NAME=a,b,c; the others keep their "
                 "default."):
        print(textwrap.fill(note, width=limit) if limit else note)
    return 0


def add_info_commands(sub: Any) -> None:
    """Register ``strategies`` and ``params`` on the CLI's sub-parser set."""
    st = sub.add_parser("strategies", help="list the strategies usable as --strategy")
    st.add_argument("--json", action="store_true", help="print them as JSON")
    st.set_defaults(func=cmd_strategies)
    pa = sub.add_parser("params", help="list a strategy's parameters, defaults and search ranges")
    pa.add_argument("strategy", help="strategy id, plug-in name or 'package.module:Name'")
    pa.add_argument("--json", action="store_true", help="print them as JSON (one object per parameter)")
    pa.set_defaults(func=cmd_params)


def _fmt_metric(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def backtest_report(result: Any, data_label: str, *, start_given: bool) -> str:
    """The text report of one backtest: strategy, data window (and whether it had a warm-up), parameters, metrics,
    the last trades."""
    data = result.data
    defaults = result.strategy.defaults()
    changed = [k for k, v in result.params.items() if defaults.get(k) != v]
    warmup = (f"{data.trade_start_idx} warm-up bars before it" if start_given else
              "no warm-up: without --start trading begins at the first bar, with indicators still filling; "
              "give --start to keep --warmup bars before it")
    columns = shutil.get_terminal_size((100, 24)).columns

    def block(label: str, text: str) -> str:  # a labelled line, wrapped under its label
        return textwrap.fill(text, width=columns, initial_indent=f"{label:<11}", subsequent_indent=" " * 11,
                             break_on_hyphens=False)

    out = [
        f"Strategy   {result.strategy.name or result.strategy.id} ({result.strategy.id})",
        f"Data       {data_label}: {data.n_bars} bars {data.index[0]} .. {data.index[-1]}",
        block("Trading", f"from {result.trade_start} ({warmup})"),
        block("Params", ", ".join(f"{k}={v:g}{'*' if k in changed else ''}" if isinstance(v, float) else
                                  f"{k}={v}{'*' if k in changed else ''}" for k, v in result.params.items())),
        "           (* = not the strategy's default)" if changed else "           (all defaults)",
        "",
        "Metrics",
    ]
    width = max(len(k) for k in result.metrics)
    out += [f"  {k:<{width}}  {_fmt_metric(v)}" for k, v in result.metrics.items()]
    trades = result.trades
    out += ["", f"Trades ({len(trades)})"]
    if len(trades):
        shown = trades if len(trades) <= 20 else trades.tail(20)
        if len(trades) > 20:
            out.append(f"  (last 20 of {len(trades)}; --json for all)")
        out.append(shown.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return "\n".join(out)


def print_results_table(run: Any, top: int = 10) -> None:
    from .optimize import results_table

    table = results_table(run, compact=True, distinct=True)
    if table.empty:
        print("No finished trials.")
        return
    if len(run.objectives) > 1:
        front = table[table["pareto"].astype(bool)]
        print(f"Pareto front: {len(front)} distinct parameter sets, best {run.objectives[0].metric} first "
              f"(objectives: {', '.join(f'{o.metric} ({o.direction})' for o in run.objectives)}"
              + (f"; constraints: {', '.join(c.text for c in run.constraints)}" if run.constraints else "") + ")")
        width = shutil.get_terminal_size((0, 0)).columns or None
        print(front.to_string(index=False, float_format=lambda x: f"{x:.4g}", line_width=width))
        print()
    print(f"Top {min(top, len(table))} of {len(table)} distinct parameter sets ({len(run.results)} results; "
          f"'trials': how many trials had that set; target: {run.config.target}, {run.direction})")
    width = shutil.get_terminal_size((0, 0)).columns or None  # a terminal: wrap columns to its width
    print(table.head(top).to_string(index=False, float_format=lambda x: f"{x:.4g}", line_width=width))


def print_holdout_table(run: Any, table: Any) -> None:
    """The top results in-sample and on the hold-out, side by side (rank 1 = best by the target)."""
    target = "score" if run.metric == "score" else run.metric
    cols = ["trial", f"is_{target}", f"holdout_{target}", "is_net_profit_pct", "holdout_net_profit_pct",
            "is_rank", "holdout_rank", "profit_degradation"]
    first, last = table.attrs["holdout_window"]
    print(f"\nHold-out {first} .. {last}: the top {len(table)} results on data the optimisation did not see")
    print(table[[c for c in dict.fromkeys(cols) if c in table.columns]].to_string(
        index=False, float_format=lambda x: f"{x:.4g}"))
