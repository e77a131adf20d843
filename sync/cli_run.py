"""`kanvoice run`: the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer

from sync.cli import CliError, ConfigOption, _errors, _settings, app


@app.command()
def run(
    config: ConfigOption = None,
    without_stripe: Annotated[
        bool,
        typer.Option(
            "--without-stripe",
            help="Run with no Stripe key: track hours, invoice nothing (logged every drain).",
        ),
    ] = False,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help=(
                "all (default): the web process, which spawns and supervises the worker "
                "process; web: only the web server (webhooks, Slack, dashboard, health); "
                "worker: only the scheduled work (inbox, polling, drafting, outbox)."
            ),
        ),
    ] = "all",
) -> None:
    """The daemon: pollers, webhooks, approvals, dashboard, metrics (until SIGTERM)."""
    from connectors.slack import run_socket_mode
    from sync.approvals import desk_for
    from sync.composition import build_services
    from sync.daemon import Daemon
    from sync.logs import configure_logging
    from sync.web.app import create_app
    from sync.web_process import (
        WorkerProcess,
        become_worker,
        exit_like,
        serve_web,
        worker_argv,
    )

    with _errors():
        settings = _settings(config)  # no config, no daemon: one line, exit 2
        if settings.stripe.api_key is None and not without_stripe:
            raise CliError(
                "stripe.api_key: not set (KANVOICE_STRIPE__API_KEY or the stripe__api_key "
                "file): kanvoice run would track hours but never invoice; set it, or pass "
                "--without-stripe to run tracking only"
            )
        if role not in ("all", "web", "worker"):
            raise CliError(f"--role: {role!r} is not one of all, web, worker")
        tell_leader = become_worker() if role == "worker" else None
        services = build_services(settings)  # every board's missing credential: exit 2
        configure_logging()
        if role != "worker":
            web = create_app(services)
            worker = (
                WorkerProcess(worker_argv(str(config) if config else None, without_stripe))
                if role == "all"
                else None
            )
            try:
                code = asyncio.run(
                    serve_web(services, web, worker, on_stop=[web.state.broker.close])
                )
            finally:
                services.close()
            exit_like(code)
            return
        desk = desk_for(services)
        slack = services.settings.slack
        background: list[Callable[[asyncio.Event], Coroutine[Any, Any, Any]]] = []
        if slack.socket_mode and slack.app_token is not None:
            app_token = slack.app_token.get_secret_value()

            async def socket_mode(stop: asyncio.Event) -> None:
                # Installs with no public URL: the same handler as /slack/interactions.
                await run_socket_mode(
                    app_token, desk.handle_payload, stop=stop, base_url=slack.api_url
                )

            background.append(socket_mode)
        daemon = Daemon(
            services,
            None,
            request_approval=desk.post_for_approval,
            extra_jobs=[("slack", desk.drain_slack, 10)] if desk.can_post else [],
            background=background,
            desk=desk,
        )
        daemon.on_leader = tell_leader
        try:
            asyncio.run(daemon.run_worker())
        finally:
            services.close()
