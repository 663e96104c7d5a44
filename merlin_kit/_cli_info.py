"""``merlin-kit strategies`` and ``merlin-kit params STRATEGY``: what can be optimised, before anything runs.

A new user's first question is which names ``--params`` (CLI) or
``param_ranges`` (API) accept and what the defaults are; these commands answer
it from the strategy's schema (:meth:`~merlin_kit.strategies.Strategy.describe`),
so a user strategy gets them too.
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
