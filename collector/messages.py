"""Alert messages: one event's payload as each channel kind wants it.

The payload (built by collector/alerts.py) is what a generic webhook receives
as JSON, unchanged: the contract's ``event``, ``node_id``, ``name`` and
``since``, plus what an operator needs to act on it (docs/alerts.md lists
every field). Slack and Discord get their incoming-webhook formats with the
same facts; email a plain-text message.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

# Slack's attachment colours and Discord's embed colours: red for down, green
# for up, blue for a test an operator asked for.
COLOURS = {"node_down": "#d92d20", "node_up": "#12b76a", "test": "#2e90fa"}
TITLES = {"node_down": "DOWN", "node_up": "UP", "test": "a test"}
EVENT_TEST = "test"


def test_payload(*, operator_id: int, channel_id: int, at: str) -> dict[str, Any]:
    """A test message (issue 16: "test this channel" on /operator and ``fleetscope channel test``).

    The same fields as a node event, so a receiver that parses one parses
    this; ``event`` is "test" and ``node_id`` null, so none mistakes it for one.
    """
    return {
        "event": EVENT_TEST, "node_id": None, "name": "test", "since": at, "status": "test",
        "last_ok_at": None, "interval_s": None, "grace_s": None, "operator_id": operator_id,
        "channel_id": channel_id, "flapping": False, "suppressed_changes": 0,
        "reason": "a test message sent on your request: alerts for your nodes reach this channel",
    }


def headline(payload: dict[str, Any]) -> str:
    """One line: which node, what happened, since when."""
    if payload["event"] == EVENT_TEST:
        return f"[fleetscope] test message for channel {payload['channel_id']} at {payload['since']}"
    what = TITLES[payload["event"]]
    line = f"[fleetscope] {payload['name']} (node {payload['node_id']}) is {what} since {payload['since']}"
    if payload.get("flapping"):
        line += f" (flapping: {payload['suppressed_changes']} changes not sent)"
    return line


def details(payload: dict[str, Any]) -> list[str]:
    """The facts behind the headline, one per line."""
    if payload["event"] == EVENT_TEST:
        return [payload["reason"]]
    return [
        f"state: {payload['status']}",
        f"last successful observation: {payload['last_ok_at'] or 'never'}",
        f"interval: {payload['interval_s']} s, grace: {payload['grace_s']} s",
        payload["reason"],
    ]


def webhook_body(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Slack incoming webhook: ``text`` (shown in notifications) and a coloured attachment."""
    return {
        "text": headline(payload),
        "attachments": [{"color": COLOURS[payload["event"]], "text": "\n".join(details(payload)),
                         "fallback": headline(payload)}],
    }


def discord_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Discord webhook: ``content`` and one embed (colour as an integer, as Discord wants)."""
    return {
        "content": headline(payload),
        "embeds": [{"title": f"{payload['name']} is {TITLES[payload['event']]}",
                    "description": "\n".join(details(payload)),
                    "color": int(COLOURS[payload["event"]].lstrip("#"), 16),
                    "timestamp": payload["since"]}],
        "allowed_mentions": {"parse": []},  # a node name must never ping @everyone
    }


def email_message(payload: dict[str, Any], *, sender: str, to: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = headline(payload)
    message["From"] = sender
    message["To"] = to
    message["X-Fleetscope-Event"] = payload["event"]
    message["X-Fleetscope-Node-Id"] = str(payload["node_id"])
    message.set_content("\n".join([headline(payload), "", *details(payload), ""]))
    return message
