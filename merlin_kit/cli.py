"""``merlin-kit`` command line: backtest, optimize, worker, dashboard.

Errors a person caused (bad file, bad parameter, bad configuration) print one
line on stderr and exit with code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from .errors import MerlinError

EXIT_USAGE = 2


def _parse_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MerlinError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MerlinError(f"{what} must be a JSON object like '{{\"maLength\": 100}}', got {type(value).__name__}")
    return value


def _fmt_metric(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest import backtest

    params = _parse_json_object(args.params, "--params") if args.params else None
    result = backtest(args.data, args.strategy, params, start=args.start, end=args.end, warmup_bars=args.warmup)
    if args.json:
        payload = result.to_dict()
        print(json.dumps({"metrics": payload["metrics"], "trades": payload["trades"]}))
        return 0
    data = result.data
    out = [
        f"Strategy   {result.strategy.name or result.strategy.id} ({result.strategy.id})",
        f"Data       {args.data}: {data.n_bars} bars {data.index[0]} .. {data.index[-1]}, trading from {result.trade_start}",
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
    print("\n".join(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merlin-kit", description="Backtest and optimise trading strategies.")
    sub = parser.add_subparsers(dest="command", required=True)

    bt = sub.add_parser("backtest", help="run one backtest and print a report")
    bt.add_argument("--data", required=True, help="CSV path, or 'sample' for the bundled synthetic data")
    bt.add_argument("--strategy", default="s01_trailing_ma", help="strategy id or 'package.module:Name'")
    bt.add_argument("--params", help="JSON object of parameter values, e.g. '{\"maLength\": 100}'")
    bt.add_argument("--start", help="first trading bar (ISO-8601, UTC)")
    bt.add_argument("--end", help="last bar (ISO-8601, UTC, inclusive)")
    bt.add_argument("--warmup", type=int, default=1000, help="warm-up bars before --start (default 1000)")
    bt.add_argument("--json", action="store_true", help="print {metrics, trades} as one JSON object")
    bt.set_defaults(func=cmd_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MerlinError as exc:
        print(f"merlin-kit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"merlin-kit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
