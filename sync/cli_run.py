"""`kanvoice run`: the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer

from sync.cli_common import CliError, ConfigOption, open_services, run_command, settings_from

commands = typer.Typer()


@commands.command()
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
    # The daemon's stack (uvicorn, the web app, Socket Mode) only for this command.
    from connectors.slack import run_socket_mode
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

    async def main() -> int | None:
        settings = settings_from(config)  # no config, no daemon: one line, exit 2
        if settings.stripe.api_key is None and not without_stripe:
            raise CliError(
                "stripe.api_key: not set (KANVOICE_STRIPE__API_KEY or the stripe__api_key "
                "file): kanvoice run would track hours but never invoice; set it, or pass "
                "--without-stripe to run tracking only"
            )
        if role not in ("all", "web", "worker"):
            raise CliError(f"--role: {role!r} is not one of all, web, worker")
        tell_leader = become_worker() if role == "worker" else None
        # Every board's missing credential: exit 2, before anything starts.
        async with open_services(settings) as services:
            configure_logging()
            if role != "worker":
                web = create_app(services)
                worker = (
                    WorkerProcess(worker_argv(str(config) if config else None, without_stripe))
                    if role == "all"
                    else None
                )
                return await serve_web(services, web, worker, on_stop=[web.state.broker.close])
            desk = services.desk
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
            await daemon.run_worker()
            return None

    code = run_command(main)
    if code is not None:
        # The web process leaves the way its worker did (signal or status).
        exit_like(code)
