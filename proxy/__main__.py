"""`python -m proxy`: the command line of Gantry's reverse proxy.

    python -m proxy --listen HOST:PORT --admin HOST:PORT \\
        --controller host:port[,host:port] --workers N \\
        [--balance least_request|round_robin|weighted] [--proxy-id ID] \\
        [--config FILE] [--table FILE]

Settings come from gantry.config.load_settings (section "proxy": defaults <
the TOML file < GANTRY_PROXY_* < flags). `--table` serves a static table
(JSON as /admin/table shows it) until a controller sends one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gantry.config import ConfigError, load_settings
from proxy.select import Balance
from proxy.settings import ProxySettings, parse_hostport
from proxy.supervisor import SupervisorError, run
from proxy.table import Table, TableError, table_from_json


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m proxy", description="Gantry's reverse proxy.")
    p.add_argument("--listen", help="HOST:PORT for client traffic (default 0.0.0.0:8080)")
    p.add_argument("--admin", help="HOST:PORT for /metrics and /admin (default 127.0.0.1:9180)")
    p.add_argument("--controller", help="controller gRPC addresses, comma separated")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--balance", choices=[b.value for b in Balance])
    p.add_argument("--proxy-id")
    p.add_argument("--config", type=Path, help="TOML file with a [proxy] table")
    p.add_argument("--table", help="a static endpoint table (JSON) to start with")
    return p.parse_args(argv)


def _load_table(path: str) -> Table:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"--table {path}: {exc.strerror or exc}") from None
    try:
        return table_from_json(data)
    except TableError as exc:
        raise ValueError(f"--table {path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s proxy %(levelname)s %(message)s")
    try:
        settings = load_settings(
            ProxySettings,
            section="proxy",
            file=args.config,
            overrides={
                "listen": args.listen,
                "admin": args.admin,
                "controller": args.controller,
                "workers": args.workers,
                "balance": args.balance,
                "proxy_id": args.proxy_id,
            },
        )
        parse_hostport(settings.listen, "--listen")
        parse_hostport(settings.admin, "--admin")
        settings.balance_policy()
        table = _load_table(args.table) if args.table else None
    except (ConfigError, ValueError) as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.run(run(settings, table=table))
    except (SupervisorError, TableError, OSError) as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
