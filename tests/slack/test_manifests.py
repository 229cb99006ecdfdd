"""The app manifests: valid against Slack's manifest schema and in step with the code."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot.slack import ids
from bot.slack.server import EVENTS_PATH
from tests.conftest import shared_path

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SCOPES = {"commands", "chat:write", "im:write", "im:history", "users:read", "users:read.email"}


def load(name: str) -> dict:
    return yaml.safe_load((MANIFESTS / name).read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(shared_path("data", "slack", "slack-app-manifest.schema.json").read_text())


@pytest.mark.parametrize("name", ["manifest.http.yaml", "manifest.socket.yaml"])
def test_manifest_valid_against_schema(name, schema):
    jsonschema.validate(load(name), schema)


@pytest.mark.parametrize("name", ["manifest.http.yaml", "manifest.socket.yaml"])
def test_manifest_declares_commands_home_and_scopes(name):
    manifest = load(name)
    commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert commands == {ids.CRM_COMMAND, ids.WHOKNOWS_COMMAND}
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == SCOPES
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == {"app_home_opened", "message.im"}
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert len(manifest["display_information"]["long_description"]) >= 175


def test_socket_manifest_has_no_urls():
    manifest = load("manifest.socket.yaml")
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in manifest["settings"]["event_subscriptions"]
    assert "request_url" not in manifest["settings"]["interactivity"]
    assert all("url" not in c for c in manifest["features"]["slash_commands"])


def test_http_manifest_points_every_url_at_events_path():
    manifest = load("manifest.http.yaml")
    url = f"https://example.com{EVENTS_PATH}"
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["event_subscriptions"]["request_url"] == url
    assert manifest["settings"]["interactivity"]["request_url"] == url
    assert {c["url"] for c in manifest["features"]["slash_commands"]} == {url}


def test_manifests_differ_only_in_transport():
    http, socket = load("manifest.http.yaml"), load("manifest.socket.yaml")
    for manifest in (http, socket):
        manifest["settings"].pop("socket_mode_enabled")
        manifest["settings"]["event_subscriptions"].pop("request_url", None)
        manifest["settings"]["interactivity"].pop("request_url", None)
        for command in manifest["features"]["slash_commands"]:
            command.pop("url", None)
    assert http == socket
