"""`kanvoice run`: the daemon."""

from __future__ import annotations

import asyncio

from sync.cli import ConfigOption, _errors, _settings, app


@app.command()
def run(config: ConfigOption = None) -> None:
    """The daemon: pollers, webhooks, approvals, dashboard, metrics (until SIGTERM)."""
    from sync.composition import build_services
    from sync.daemon import Daemon
    from sync.logs import configure_logging
    from sync.web.app import create_app

    with _errors():
        configure_logging()
        services = build_services(_settings(config))
        web = create_app(services)
        daemon = Daemon(services, web, notify=web.state.notify, on_stop=[web.state.broker.close])
        try:
            asyncio.run(daemon.run())
        finally:
            services.close()
