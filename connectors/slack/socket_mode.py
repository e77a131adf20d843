"""Socket Mode: interactions over an app-token WebSocket, for installs with no public URL.

Slack delivers the same interaction payloads as to ``POST /slack/interactions``, in
envelopes that must be acknowledged within 3 s. `ack_for` is the adapter: it passes
an ``interactive`` envelope's payload to the same handler the HTTP route uses and
turns the handler's answer (e.g. ``{"response_action": "errors", ...}`` for a modal)
into the acknowledgement. `run_socket_mode` wires it to slack-sdk's aiohttp
`SocketModeClient` and runs until `stop` is set or the task is cancelled.

Envelopes are authenticated by the connection itself (the app token), so no
signature check applies here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient

from connectors.base import FatalError
from connectors.slack.client import SLACK_API_URL, SlackCallFailed, SlackUnavailable
from connectors.slack.verify import SlackInputInvalid, SlackRequestRejected

logger = logging.getLogger(__name__)

InteractionHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Takes an interaction payload; returns the JSON to answer with (or None: empty 200)."""

ACK_TIMEOUT = 2.5

_background: set[asyncio.Future[Any]] = set()


class Envelope(Protocol):
    """What `ack_for` needs of a Socket Mode envelope (`SocketModeRequest` fits)."""

    type: str
    envelope_id: str
    payload: dict[str, Any]


class _Sender(Protocol):
    async def send_socket_mode_response(self, response: dict[str, Any]) -> None: ...


def _log_late_failure(task: asyncio.Future[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("slack socket mode: handler failed after the ack", exc_info=task.exception())


async def ack_for(
    envelope: Envelope, handler: InteractionHandler, ack_timeout: float = ACK_TIMEOUT
) -> dict[str, Any]:
    """The acknowledgement for one envelope, after running `handler` on interactive ones.

    Non-interactive envelopes (events, slash commands) are acknowledged and ignored.
    Errors never prevent the ack (Slack would redeliver): invalid modal input
    becomes the ``errors`` answer; anything else is logged. A handler slower than
    `ack_timeout` keeps running in the background and the ack goes out empty.
    """
    ack: dict[str, Any] = {"envelope_id": envelope.envelope_id}
    if envelope.type != "interactive" or not isinstance(envelope.payload, dict):
        return ack
    task = asyncio.ensure_future(handler(envelope.payload))
    result: dict[str, Any] | None = None
    try:
        result = await asyncio.wait_for(asyncio.shield(task), ack_timeout)
    except SlackInputInvalid as exc:
        result = exc.response_body()
    except SlackRequestRejected as exc:
        logger.warning("slack socket mode: rejected envelope %s: %s", envelope.envelope_id, exc)
    except TimeoutError:
        logger.warning(
            "slack socket mode: handler took over %.1f s; acknowledged %s without a payload",
            ack_timeout,
            envelope.envelope_id,
        )
        _background.add(task)
        task.add_done_callback(_log_late_failure)
    except Exception:
        logger.exception("slack socket mode: handler failed for %s", envelope.envelope_id)
    if result:
        ack["payload"] = result
    return ack


def make_listener(
    handler: InteractionHandler, ack_timeout: float = ACK_TIMEOUT
) -> Callable[[Any, SocketModeRequest], Awaitable[None]]:
    """A `SocketModeClient` request listener that acknowledges through `ack_for`."""

    async def listener(client: Any, request: SocketModeRequest) -> None:
        sender: _Sender = client
        await sender.send_socket_mode_response(await ack_for(request, handler, ack_timeout))

    return listener


async def _open_connection(web: AsyncWebClient, app_token: str) -> str:
    try:
        resp = await asyncio.wait_for(web.apps_connections_open(app_token=app_token), 30)
    except SlackApiError as exc:
        data = getattr(exc.response, "data", None)
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        status = int(getattr(exc.response, "status_code", 0) or 0)
        if status == 429 or status >= 500 or not error:
            raise SlackUnavailable("apps.connections.open", f"HTTP {status} {error}") from exc
        raise SlackCallFailed("apps.connections.open", error) from exc
    except (TimeoutError, OSError) as exc:
        raise SlackUnavailable("apps.connections.open", f"unreachable: {exc!r}") from exc
    url = resp.get("url")
    if not isinstance(url, str) or not url:
        raise SlackUnavailable("apps.connections.open", "no WebSocket URL in the answer")
    return url


async def run_socket_mode(
    app_token: str,
    handler: InteractionHandler,
    *,
    stop: asyncio.Event | None = None,
    base_url: str = SLACK_API_URL,
    ack_timeout: float = ACK_TIMEOUT,
) -> None:
    """Receive interactions over Socket Mode until `stop` is set (or cancellation).

    The app token is checked first with ``apps.connections.open``: a bad token raises
    `SlackCallFailed` at once instead of slack-sdk's endless reconnect loop; Slack
    unreachable raises `SlackUnavailable`. Once connected, slack-sdk reconnects by
    itself.
    """
    if not app_token.startswith("xapp-"):
        raise FatalError("Socket Mode needs an app-level token (xapp-…), not a bot token")
    web = AsyncWebClient(base_url=base_url)
    wss_url = await _open_connection(web, app_token)
    client = SocketModeClient(app_token=app_token, web_client=web, logger=logger)
    client.socket_mode_request_listeners.append(make_listener(handler, ack_timeout))
    client.wss_uri = wss_url
    connecting = asyncio.ensure_future(client.connect())  # type: ignore[no-untyped-call]
    stopping = asyncio.ensure_future((stop or asyncio.Event()).wait())
    try:
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if connecting.done():
            connecting.result()
            logger.info("slack socket mode: connected")
            await stopping
    finally:
        for task in (connecting, stopping):
            task.cancel()
        await client.close()  # type: ignore[no-untyped-call]
