"""Socket Mode: the envelope -> handler -> ack adapter, and one run over a local WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from slack_sdk.socket_mode.request import SocketModeRequest

from connectors.base import FatalError
from connectors.slack.socket_mode import ack_for, make_listener, run_socket_mode
from connectors.slack.verify import SlackInputInvalid, decision_from_payload
from tests.fakes.slack_server import DEFAULT_APP_TOKEN, FakeSlack, serve_fake_slack

DATA = Path(__file__).resolve().parents[1] / "data" / "slack"
APPROVE = json.loads((DATA / "block_actions_approve.json").read_text())


class Recorder:
    """The shared handler, as the HTTP route would use it."""

    def __init__(self, answer: dict[str, Any] | None = None, delay: float = 0.0) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.answer = answer
        self.delay = delay
        self.done = asyncio.Event()

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        self.payloads.append(payload)
        if self.delay:
            await asyncio.sleep(self.delay)
        self.done.set()
        return self.answer


def envelope(kind: str = "interactive", payload: dict[str, Any] | None = None) -> SocketModeRequest:
    return SocketModeRequest(
        type=kind, envelope_id="env-1", payload=payload if payload is not None else APPROVE
    )


async def test_interactive_envelope_reaches_the_handler_and_is_acked() -> None:
    handler = Recorder()
    ack = await ack_for(envelope(), handler)
    assert ack == {"envelope_id": "env-1"}
    assert handler.payloads == [APPROVE]
    decision = decision_from_payload(handler.payloads[0])
    assert decision is not None and decision.kind == "approve"


async def test_the_handler_answer_becomes_the_ack_payload() -> None:
    answer = {"response_action": "clear"}
    ack = await ack_for(envelope(), Recorder(answer))
    assert ack == {"envelope_id": "env-1", "payload": answer}


async def test_other_envelopes_are_acked_without_calling_the_handler() -> None:
    handler = Recorder()
    for kind in ("events_api", "slash_commands"):
        assert await ack_for(envelope(kind, {"event": {}}), handler) == {"envelope_id": "env-1"}
    assert handler.payloads == []


async def test_invalid_modal_input_is_answered_with_errors() -> None:
    async def handler(payload: dict[str, Any]) -> dict[str, Any] | None:
        raise SlackInputInvalid({"line:1:hours": "Enter a number"})

    ack = await ack_for(envelope(), handler)
    assert ack["payload"] == {
        "response_action": "errors",
        "errors": {"line:1:hours": "Enter a number"},
    }


async def test_a_failing_handler_still_acks() -> None:
    async def handler(payload: dict[str, Any]) -> dict[str, Any] | None:
        raise RuntimeError("ledger down")

    assert await ack_for(envelope(), handler) == {"envelope_id": "env-1"}


async def test_a_slow_handler_is_acked_in_time_and_finishes_later() -> None:
    handler = Recorder({"response_action": "clear"}, delay=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    ack = await ack_for(envelope(), handler, ack_timeout=0.05)
    assert loop.time() - started < 0.25
    assert ack == {"envelope_id": "env-1"}
    await asyncio.wait_for(handler.done.wait(), 2)


async def test_listener_sends_the_ack_through_the_client() -> None:
    class Client:
        def __init__(self) -> None:
            self.sent: list[dict[str, Any]] = []

        async def send_socket_mode_response(self, response: dict[str, Any]) -> None:
            self.sent.append(response)

    client = Client()
    await make_listener(Recorder({"ok": 1}))(client, envelope())
    assert client.sent == [{"envelope_id": "env-1", "payload": {"ok": 1}}]


# ---- run_socket_mode ---------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack()


@pytest.fixture
def base_url(fake: FakeSlack) -> Iterator[str]:
    with serve_fake_slack(fake) as url:
        yield url


async def test_a_bot_token_is_refused_at_once() -> None:
    with pytest.raises(FatalError, match="app-level token"):
        await run_socket_mode("xoxb-not-an-app-token", Recorder())


async def test_a_wrong_app_token_fails_fast_instead_of_reconnecting(base_url: str) -> None:
    with pytest.raises(FatalError, match="invalid_auth"):
        await asyncio.wait_for(run_socket_mode("xapp-wrong", Recorder(), base_url=base_url), 5)


@pytest.fixture
async def socket_server() -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, Any]]]]:
    """A minimal Socket Mode endpoint: hello, one interactive envelope, collect acks."""
    acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def link(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        await ws.send_str(
            json.dumps(
                {
                    "envelope_id": "env-42",
                    "type": "interactive",
                    "accepts_response_payload": True,
                    "payload": APPROVE,
                }
            )
        )
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await acks.put(json.loads(message.data))
        return ws

    app = web.Application()
    app.router.add_get("/link", link)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/link")).replace("http://", "ws://"), acks
    finally:
        await server.close()


async def test_run_socket_mode_acks_envelopes_from_slack(
    fake: FakeSlack,
    base_url: str,
    socket_server: tuple[str, asyncio.Queue[dict[str, Any]]],
) -> None:
    url, acks = socket_server
    fake.socket_url = url
    handler = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_socket_mode(DEFAULT_APP_TOKEN, handler, stop=stop, base_url=base_url)
    )
    try:
        ack = await asyncio.wait_for(acks.get(), 10)
        assert ack == {"envelope_id": "env-42"}
        assert handler.payloads == [APPROVE]
        assert fake.calls_to("apps.connections.open")[0].token == DEFAULT_APP_TOKEN
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
