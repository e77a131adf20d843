"""A fake Slack Web API for tests and ``kanvoice demo``, served over real HTTP (Starlette).

Methods (``POST`` or ``GET`` ``/api/{method}``; JSON, form or query arguments, like
Slack): ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
``views.open``, ``usergroups.users.list``, ``apps.connections.open``. Interaction
``response_url``\\ s are served under ``/actions/...``.

Like Slack: the bot token comes as ``Authorization: Bearer`` (or a ``token``
argument); errors are HTTP 200 with ``{"ok": false, "error": ...}`` (``not_authed``,
``invalid_auth``, ``channel_not_found``, ``message_not_found``, ``invalid_blocks``,
``expired_trigger_id``, ``no_such_subteam``...); rate limits are HTTP 429 with
``Retry-After``. Message / modal limits are checked (50 blocks per message, 100 per
modal, unique block ids, modal title <= 24 characters, private_metadata <= 3000).

Every call is recorded (`FakeSlack.calls`), messages are kept by (channel, ts) with
their edit history, and faults can be injected (`FakeSlack.inject_fault`: 429 with
Retry-After, 500, or ``ok: false`` errors). `FakeSlack.click` and
`FakeSlack.submit_view` build realistic interaction payloads from what was actually
posted / opened, and `signed_interaction_request` signs them as Slack does.

``serve_fake_slack(fake)`` runs it with uvicorn on a free loopback port in a
thread and yields the base URL ending in ``/api/`` (AsyncWebClient's ``base_url``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JSON = dict[str, Any]

DEFAULT_TOKEN = "xoxb-kanvoice-test"
DEFAULT_APP_TOKEN = "xapp-1-kanvoice-test"
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_BASE_TS = 1_790_000_000


@dataclass
class SlackCall:
    """One request the fake answered: method, merged arguments, token and the answer."""

    method: str
    args: JSON
    token: str | None
    status: int
    ok: bool
    error: str | None = None


@dataclass
class FakeMessage:
    """A message the bot posted; `history` holds earlier versions (one per chat.update)."""

    channel: str
    ts: str
    text: str
    blocks: list[JSON]
    user: str
    history: list[JSON] = field(default_factory=list)
    deleted: bool = False

    def action_values(self) -> dict[str, str]:
        """action_id -> button value, over every actions block of the message."""
        found: dict[str, str] = {}
        for block in self.blocks:
            if block.get("type") == "actions":
                for element in block.get("elements", []):
                    if "action_id" in element and "value" in element:
                        found[element["action_id"]] = element["value"]
        return found

    def all_text(self) -> str:
        """The fallback text plus every text found in the blocks (for assertions)."""
        parts = [self.text]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("text"), str):
                    parts.append(node["text"])
                for value in node.values():
                    if isinstance(value, dict | list):
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(self.blocks)
        return "\n".join(parts)


@dataclass
class SlackFault:
    """An injected failure for the next `times` calls (of `method`, or of any method)."""

    status: int
    method: str | None = None
    error: str | None = None
    retry_after: float | None = None
    times: int = 1


@dataclass
class _ResponseLink:
    channel: str
    ts: str | None
    user: str


class _Error(Exception):
    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


class FakeSlack:
    """In-memory Slack workspace with one bot: channels, user groups, messages, views.

    Thread-safe: tests read and change it while the server thread answers requests.
    `public_url` (``http://127.0.0.1:PORT``) is set while `serve_fake_slack` runs.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        app_token: str = DEFAULT_APP_TOKEN,
        team_id: str = "T0KANVOICE",
        team_domain: str = "kanvoice-test",
        bot_user_id: str = "U0KVBOT",
        bot_id: str = "B0KVBOT",
        channels: Mapping[str, str] | None = None,
        usergroups: Mapping[str, Iterable[str]] | None = None,
        users: Mapping[str, str] | None = None,
        socket_url: str | None = None,
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.channels: dict[str, str] = dict(channels or {"finance-approvals": "C0FINANCE"})
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in (usergroups or {}).items()}
        self.users: dict[str, str] = dict(users or {})
        #: Channel ids the bot is not a member of (conversations.info says is_member false).
        self.outside_channels: set[str] = set()
        self.socket_url = socket_url
        self.public_url: str | None = None
        self.calls: list[SlackCall] = []
        self.messages: dict[tuple[str, str], FakeMessage] = {}
        self.ephemerals: list[JSON] = []
        self.views: dict[str, JSON] = {}
        self.responses: list[JSON] = []
        self.faults: list[SlackFault] = []
        self.expired_triggers: set[str] = set()
        self._links: dict[str, _ResponseLink] = {}
        self._counter = itertools.count(1)
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["GET", "POST"]),
                Route("/actions/{team}/{link}/{secret}", self._response_url, methods=["POST"]),
            ]
        )

    # ---- test helpers ---------------------------------------------------------------

    def inject_fault(
        self,
        status: int = 500,
        *,
        method: str | None = None,
        error: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Fail the next `times` calls (of `method`, or any): HTTP `status` with `error`.

        ``status=429`` answers ``Retry-After`` (default 1) and ``ratelimited``;
        ``status=200`` with `error` answers ``{"ok": false, "error": error}``.
        """
        with self._lock:
            self.faults.append(SlackFault(status, method, error, retry_after, times))

    def set_group(self, group_id: str, members: Iterable[str]) -> None:
        """Create or replace a user group's members."""
        with self._lock:
            self.usergroups[group_id] = list(members)

    def calls_to(self, method: str) -> list[SlackCall]:
        """The recorded calls of one method, oldest first."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> FakeMessage:
        """The current state of a posted message (KeyError if unknown)."""
        with self._lock:
            return self.messages[(self._channel_id(channel), ts)]

    def channel_messages(self, channel: str) -> list[FakeMessage]:
        """Messages of a channel in posting order (deleted ones excluded)."""
        cid = self._channel_id(channel)
        with self._lock:
            found = [m for (c, _), m in self.messages.items() if c == cid and not m.deleted]
        return sorted(found, key=lambda m: float(m.ts))

    def new_trigger_id(self) -> str:
        """A trigger id like Slack's (``views.open`` accepts it unless expired)."""
        return f"{next(self._counter)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"

    def response_url(self, channel: str, ts: str | None, user: str) -> str:
        """A response_url bound to a message and the user who interacted."""
        if not self.public_url:
            raise RuntimeError("response URLs need the fake to be served (serve_fake_slack)")
        link = str(next(self._counter))
        secret = secrets.token_hex(12)
        with self._lock:
            self._links[f"{link}/{secret}"] = _ResponseLink(self._channel_id(channel), ts, user)
        return f"{self.public_url}/actions/{self.team_id}/{link}/{secret}"

    def _user_json(self, user_id: str, user_name: str | None) -> JSON:
        name = user_name or self.users.get(user_id) or user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def click(
        self, channel: str, ts: str, action_id: str, user_id: str, *, user_name: str | None = None
    ) -> JSON:
        """The ``block_actions`` payload Slack sends when `user_id` clicks a button.

        Built from the message as currently posted: a button that is no longer
        there (the message was updated) raises KeyError.
        """
        message = self.message(channel, ts)
        for block in message.blocks:
            if block.get("type") != "actions":
                continue
            for element in block.get("elements", []):
                if element.get("action_id") == action_id:
                    action = {
                        "type": element.get("type", "button"),
                        "action_id": action_id,
                        "block_id": block.get("block_id", ""),
                        "text": element.get("text"),
                        "value": element.get("value"),
                        "action_ts": f"{time.time():.6f}",
                    }
                    if "style" in element:
                        action["style"] = element["style"]
                    return {
                        "type": "block_actions",
                        "user": self._user_json(user_id, user_name),
                        "api_app_id": "A0KANVOICE",
                        "token": "legacy-verification-token",
                        "container": {
                            "type": "message",
                            "message_ts": message.ts,
                            "channel_id": message.channel,
                            "is_ephemeral": False,
                        },
                        "trigger_id": self.new_trigger_id(),
                        "team": {"id": self.team_id, "domain": self.team_domain},
                        "enterprise": None,
                        "is_enterprise_install": False,
                        "channel": {"id": message.channel, "name": self._channel_name(channel)},
                        "message": {
                            "type": "message",
                            "user": message.user,
                            "bot_id": self.bot_id,
                            "ts": message.ts,
                            "text": message.text,
                            "blocks": copy.deepcopy(message.blocks),
                        },
                        "state": {"values": {}},
                        "response_url": self.response_url(message.channel, message.ts, user_id),
                        "actions": [action],
                    }
        raise KeyError(f"no button {action_id!r} on message {ts} in {channel}")

    def submit_view(
        self,
        view_id: str,
        values: Mapping[str, str | bool | None],
        user_id: str,
        *,
        user_name: str | None = None,
    ) -> JSON:
        """The ``view_submission`` payload for an opened view, with inputs filled in.

        `values` maps input block ids to what the user typed (text) or, for
        checkboxes, True (tick every option) / an option value; others stay empty.
        """
        with self._lock:
            view = copy.deepcopy(self.views[view_id])
        state: dict[str, JSON] = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            block_id = block["block_id"]
            element = block["element"]
            given = values.get(block_id)
            kind = element.get("type")
            if kind == "checkboxes":
                options = element.get("options", [])
                chosen = [
                    o for o in options if given is True or (given and o.get("value") == given)
                ]
                entry: JSON = {"type": kind, "selected_options": chosen}
            else:
                entry = {"type": kind, "value": None if given is None else str(given)}
            state[block_id] = {element["action_id"]: entry}
        view["state"] = {"values": state}
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": self._user_json(user_id, user_name),
            "api_app_id": "A0KANVOICE",
            "token": "legacy-verification-token",
            "trigger_id": self.new_trigger_id(),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    # ---- internals ------------------------------------------------------------------

    def _channel_id(self, channel: str) -> str:
        name = channel.lstrip("#")
        if name in self.channels:
            return self.channels[name]
        return channel

    def _channel_name(self, channel: str) -> str:
        cid = self._channel_id(channel)
        for name, known in self.channels.items():
            if known == cid:
                return name
        return cid.lower()

    def _known_channel(self, channel: Any) -> str:
        if not isinstance(channel, str) or not channel:
            raise _Error("channel_not_found")
        cid = self._channel_id(channel)
        if cid in self.channels.values() or _CHANNEL_ID.match(cid):
            return cid
        raise _Error("channel_not_found")

    def _next_ts(self) -> str:
        n = next(self._counter)
        return f"{_BASE_TS + n}.{n:06d}"

    def _take_fault(self, method: str) -> SlackFault | None:
        for fault in self.faults:
            if fault.method in (None, method) and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    @staticmethod
    async def _arguments(request: Request) -> JSON:
        args: JSON = dict(request.query_params)
        body = await request.body()
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body and media == "application/json":
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise _Error("invalid_json", 200) from exc
            if not isinstance(data, dict):
                raise _Error("invalid_json")
            args.update(data)
        elif body:
            args.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        for key in ("blocks", "view"):
            if isinstance(args.get(key), str):
                try:
                    args[key] = json.loads(args[key])
                except ValueError as exc:
                    raise _Error(f"invalid_{key}") from exc
        return args

    @staticmethod
    def _token(request: Request, args: JSON) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        token = args.get("token")
        return token if isinstance(token, str) else None

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        token: str | None = None
        args: JSON = {}
        try:
            args = await self._arguments(request)
            token = self._token(request, args)
            with self._lock:
                fault = self._take_fault(method)
            if fault:
                return self._fault_response(method, args, token, fault)
            handler = self._handlers().get(method)
            if handler is None:
                raise _Error("unknown_method", 404)
            self._authorize(method, token)
            with self._lock:
                result = handler(args)
            body: JSON = {"ok": True, **result}
            status = 200
        except _Error as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
            status = exc.status
        with self._lock:
            self.calls.append(
                SlackCall(method, args, token, status, bool(body["ok"]), body.get("error"))
            )
        return JSONResponse(body, status_code=status)

    def _fault_response(
        self, method: str, args: JSON, token: str | None, fault: SlackFault
    ) -> Response:
        headers: dict[str, str] = {}
        if fault.status == 429:
            error = fault.error or "ratelimited"
            retry = fault.retry_after if fault.retry_after is not None else 1
            headers["Retry-After"] = f"{retry:g}"
        elif fault.status >= 500:
            error = fault.error or "internal_error"
        else:
            error = fault.error or "fatal_error"
        with self._lock:
            self.calls.append(SlackCall(method, args, token, fault.status, False, error))
        return JSONResponse(
            {"ok": False, "error": error}, status_code=fault.status, headers=headers
        )

    def _authorize(self, method: str, token: str | None) -> None:
        if not token:
            raise _Error("not_authed")
        if method == "apps.connections.open":
            if token == self.token:
                raise _Error("not_allowed_token_type")
            if token != self.app_token:
                raise _Error("invalid_auth")
            return
        if token != self.token:
            raise _Error("invalid_auth")

    def _handlers(self) -> dict[str, Any]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
            "usergroups.users.list": self._usergroup_users,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "apps.connections.open": self._connections_open,
        }

    def _auth_test(self, args: JSON) -> JSON:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_domain,
            "user": "kanvoice",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    @staticmethod
    def _check_blocks(blocks: Any, limit: int, where: str) -> list[JSON]:
        if blocks is None:
            return []
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise _Error("invalid_blocks", messages=[f"{where}: blocks must be a list of objects"])
        problems: list[str] = []
        if len(blocks) > limit:
            problems.append(f"{where}: {len(blocks)} blocks, more than {limit}")
        seen: set[str] = set()
        for index, block in enumerate(blocks):
            if not isinstance(block.get("type"), str):
                problems.append(f"{where}: block {index} has no type")
            block_id = block.get("block_id")
            if block_id is not None:
                if block_id in seen:
                    problems.append(f"{where}: duplicate block_id {block_id!r}")
                seen.add(block_id)
            text = block.get("text")
            if isinstance(text, dict) and len(str(text.get("text", ""))) > 3000:
                problems.append(f"{where}: block {index} text over 3000 characters")
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if len(str(element.get("value", ""))) > 2000:
                    problems.append(f"{where}: button value over 2000 characters")
        if problems:
            raise _Error("invalid_blocks", response_metadata={"messages": problems})
        return list(blocks)

    def _post_message(self, args: JSON) -> JSON:
        channel = self._known_channel(args.get("channel"))
        text = args.get("text") or ""
        blocks = self._check_blocks(args.get("blocks"), 50, "message")
        if not text and not blocks:
            raise _Error("no_text")
        if len(text) > 40_000:
            raise _Error("msg_too_long")
        ts = self._next_ts()
        message = FakeMessage(channel, ts, text, copy.deepcopy(blocks), self.bot_user_id)
        self.messages[(channel, ts)] = message
        return {
            "channel": channel,
            "ts": ts,
            "message": {"type": "message", "text": text, "ts": ts, "blocks": blocks},
        }

    def _update(self, args: JSON) -> JSON:
        channel = self._known_channel(args.get("channel"))
        ts = args.get("ts")
        message = self.messages.get((channel, str(ts)))
        if message is None or message.deleted:
            raise _Error("message_not_found")
        blocks = self._check_blocks(args.get("blocks"), 50, "message")
        message.history.append({"text": message.text, "blocks": message.blocks})
        if "text" in args:
            message.text = str(args.get("text") or "")
        if "blocks" in args:
            message.blocks = copy.deepcopy(blocks)
        return {"channel": channel, "ts": message.ts, "text": message.text}

    def _post_ephemeral(self, args: JSON) -> JSON:
        channel = self._known_channel(args.get("channel"))
        user = args.get("user")
        if not isinstance(user, str) or not user:
            raise _Error("user_not_found")
        if not args.get("text") and not args.get("blocks"):
            raise _Error("no_text")
        ts = self._next_ts()
        self.ephemerals.append(
            {"channel": channel, "user": user, "text": args.get("text"), "ts": ts}
        )
        return {"message_ts": ts}

    def _views_open(self, args: JSON) -> JSON:
        trigger = args.get("trigger_id")
        if not isinstance(trigger, str) or not trigger:
            raise _Error("invalid_arguments", response_metadata={"messages": ["trigger_id"]})
        if trigger in self.expired_triggers:
            raise _Error("expired_trigger_id")
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise _Error("invalid_arguments", response_metadata={"messages": ["view.type"]})
        problems = []
        title = view.get("title")
        if not isinstance(title, dict) or not 0 < len(str(title.get("text", ""))) <= 24:
            problems.append("title must be 1-24 characters")
        if len(str(view.get("private_metadata") or "")) > 3000:
            problems.append("private_metadata over 3000 characters")
        if len(str(view.get("callback_id") or "")) > 255:
            problems.append("callback_id over 255 characters")
        has_inputs = any(b.get("type") == "input" for b in view.get("blocks", []))
        if has_inputs and not view.get("submit"):
            problems.append("a view with inputs needs a submit button")
        if problems:
            raise _Error("invalid_arguments", response_metadata={"messages": problems})
        self._check_blocks(view.get("blocks"), 100, "view")
        view_id = f"V{next(self._counter):08d}"
        stored = {
            **copy.deepcopy(view),
            "id": view_id,
            "team_id": self.team_id,
            "hash": secrets.token_hex(8),
            "state": {"values": {}},
        }
        self.views[view_id] = stored
        return {"view": copy.deepcopy(stored)}

    def _conversations_info(self, args: JSON) -> JSON:
        """A configured channel (by id or name); `is_member` false for `outside`."""
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            raise _Error("channel_not_found")
        names = {cid: name for name, cid in self.channels.items()}
        if channel not in names:
            raise _Error("channel_not_found")
        return {
            "channel": {
                "id": channel,
                "name": names[channel],
                "is_channel": True,
                "is_member": channel not in self.outside_channels,
            }
        }

    def _users_info(self, args: JSON) -> JSON:
        user = args.get("user")
        if not isinstance(user, str) or (user not in self.users and user != self.bot_user_id):
            raise _Error("user_not_found")
        return {"user": {"id": user, "name": self.users.get(user, "kanvoice"), "deleted": False}}

    def _usergroup_users(self, args: JSON) -> JSON:
        group = args.get("usergroup")
        if not isinstance(group, str) or group not in self.usergroups:
            raise _Error("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _connections_open(self, args: JSON) -> JSON:
        return {"url": self.socket_url or "wss://wss-fake.invalid/link/?ticket=fake"}

    async def _response_url(self, request: Request) -> Response:
        key = f"{request.path_params['link']}/{request.path_params['secret']}"
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return Response("invalid_payload", status_code=400, media_type="text/plain")
        with self._lock:
            link = self._links.get(key)
            if link is None:
                return Response("expired_url", status_code=404, media_type="text/plain")
            self.responses.append({"url": str(request.url), "body": body})
            message = self.messages.get((link.channel, link.ts or ""))
            if body.get("delete_original") and message:
                message.deleted = True
            elif body.get("replace_original") and message:
                message.history.append({"text": message.text, "blocks": message.blocks})
                message.text = str(body.get("text") or "")
                message.blocks = list(body.get("blocks") or [])
            elif body.get("response_type", "ephemeral") == "ephemeral":
                self.ephemerals.append(
                    {
                        "channel": link.channel,
                        "user": link.user,
                        "text": body.get("text"),
                        "ts": self._next_ts(),
                        "via": "response_url",
                    }
                )
            else:
                ts = self._next_ts()
                self.messages[(link.channel, ts)] = FakeMessage(
                    link.channel,
                    ts,
                    str(body.get("text") or ""),
                    list(body.get("blocks") or []),
                    self.bot_user_id,
                )
        return Response("ok", media_type="text/plain")


def signed_headers(
    signing_secret: str,
    body: bytes,
    timestamp: int,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, str]:
    """Headers of a request carrying `body`, signed the way Slack signs them."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
    }


def signed_interaction_request(
    signing_secret: str, payload: Mapping[str, Any], timestamp: int
) -> tuple[dict[str, str], bytes]:
    """Headers and form body of an interaction request, signed the way Slack signs them."""
    body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
    return signed_headers(signing_secret, body, timestamp), body


@contextlib.contextmanager
def serve_fake_slack(fake: FakeSlack, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `fake` on a free loopback port in a thread; yields ``http://host:port/api/``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="fake-slack", daemon=True
    )
    previous = fake.public_url
    fake.public_url = f"http://{host}:{port}"
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Slack server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}/api/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        fake.public_url = previous
