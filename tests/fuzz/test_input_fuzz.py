"""Hypothesis against every door user text comes through: session keys, lookups, flow files and channel
configuration. Each either works or raises a FlowledgerError with one line — never anything else — and a
credential never appears in an error."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowledger import FrozenClock, Ledger
from flowledger.flows.definitions import flow_from_document, parse_flow
from flowledger.tasks.core import sessionkeys
from flowledger.tasks.core.config import parse_config
from flowledger.tasks.core.errors import FlowledgerError, InvalidInput
from flowledger.tasks.core.models import Task

T0 = datetime(2026, 3, 30, 1, 0, tzinfo=UTC)

FIXTURE_OK = [HealthCheck.function_scoped_fixture]
key_parts = st.one_of(st.sampled_from(["agent", "AGENT", "main", "cron", "run", "group", "channel", "dm", "direct",
                                       "acp", "", " ", "@g.us", "discord", "guild-1", "channel-2"]),
                      st.text(max_size=8))
session_keys = st.one_of(st.text(max_size=40), st.lists(key_parts, max_size=6).map(":".join))


@given(session_keys)
def test_session_key_grammar_is_total(key: str) -> None:
    agent = sessionkeys.parse_agent_id(key)
    assert agent is None or (agent == agent.lower() and agent.strip() == agent and agent)
    assert sessionkeys.chat_type(key) in set(sessionkeys.ChatType)
    job = sessionkeys.cron_run_job_id(key)
    assert job is None or ":" not in job
    segment = sessionkeys.cron_segment(key, "fallback")
    assert segment and len(segment) <= 64 and segment == segment.lower()


@pytest.fixture(scope="module")
def lookup_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    state = tmp_path_factory.mktemp("lookups") / "state"
    with Ledger.open(state_dir=state, clock=FrozenClock(T0)) as ledger:
        ledger.tasks.create(runtime="acp", task="known", owner_key="agent:main:main",
                            child_session_key="agent:main:acp:child", run_id="run-known", status="running")
        yield ledger


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.one_of(st.text(max_size=60), st.sampled_from(["%", "_", "%%", "run-%", "agent:main:%", "' OR 1=1 --",
                                                        "\x00", "run-known ", " RUN-KNOWN", "AGENT:MAIN:MAIN"])))
def test_lookups_find_or_miss_and_never_match_by_pattern(lookup_ledger: Ledger, token: str) -> None:
    if "\x00" in token:  # no engine can hold a NUL in text: refused as bad input, never a storage error
        with pytest.raises(InvalidInput, match="NUL"):
            lookup_ledger.tasks.get(token)
        return
    found = lookup_ledger.tasks.get(token)
    assert found is None or isinstance(found, Task)
    if found is not None:  # wildcards and SQL text never widen a lookup: only a real id/run id/key matches
        keys = {found.task_id, found.run_id, found.owner_key, found.child_session_key, found.requester_session_key}
        assert token.strip() in keys or token.strip().lower() in {str(k).lower() for k in keys if k}
    assert lookup_ledger.flows.get(token) is None
    cancelled = lookup_ledger.tasks.cancel(token) if found is None else None
    assert cancelled is None or not cancelled.found


toml_scalars = st.one_of(st.integers(-5, 10**6), st.text(max_size=12), st.booleans(), st.floats(allow_nan=False),
                         st.lists(st.text(max_size=6), max_size=3))
step_docs = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.sampled_from(["a", "b", "c", ""]), st.text(max_size=6), st.integers()),
    "needs": st.one_of(st.lists(st.sampled_from(["a", "b", "c", "zz"]), max_size=3), toml_scalars),
    "run": st.one_of(st.lists(st.text(max_size=6), max_size=3), toml_scalars),
    "runtime": st.one_of(st.sampled_from(["cli", "acp", "bogus"]), toml_scalars),
    "timeout": st.one_of(st.sampled_from(["10m", "1s", "-1s", "0ms", "forever", "1e99d"]), toml_scalars),
    "shell": toml_scalars,
    "extra": toml_scalars,
})
flow_docs = st.fixed_dictionaries({}, optional={
    "flow": st.one_of(st.fixed_dictionaries({}, optional={"goal": toml_scalars, "owner": toml_scalars,
                                                          "notify": toml_scalars}), toml_scalars),
    "step": st.one_of(st.lists(step_docs, max_size=4), toml_scalars),
    "other": toml_scalars,
})


@settings(max_examples=300, deadline=None)
@given(flow_docs)
def test_flow_documents_are_accepted_or_refused_with_one_line(doc: dict[str, object]) -> None:
    try:
        flow_from_document(doc)
    except FlowledgerError as exc:
        assert isinstance(exc, InvalidInput) and exc.exit_code == 2
        assert exc.message and "\n" not in exc.message.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_flow_file_text_never_escapes_as_anything_but_a_flow_error(text: str) -> None:
    try:
        parse_flow(text, "fuzz.toml")
    except FlowledgerError as exc:
        assert exc.exit_code == 2 and "fuzz.toml" in exc.message


SECRET = "S3CR3T-VALUE-9f8e7d"
channel_bodies = st.fixed_dictionaries({}, optional={
    "url": st.sampled_from([f"https://example.org/hook/{SECRET}", f"ftp://{SECRET}", SECRET, "", f"http://{SECRET}"]),
    "webhook_url": st.sampled_from([f"https://hooks.slack.com/services/{SECRET}", f"{SECRET}", "https://"]),
    "secret": st.sampled_from([SECRET, "", 5]),
    "token": st.sampled_from([SECRET, "", 7, [SECRET]]),
    "api_base": st.sampled_from(["https://api.telegram.org", f"gopher://{SECRET}", SECRET]),
    "timeout": st.one_of(st.integers(-3, 100), st.floats(allow_nan=True), st.just(SECRET)),
    "extra_key": st.just(1),  # an unknown key is named; a key name is not a credential
})


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["webhook", "slack", "discord", "telegram", "pigeon"]), channel_bodies,
                       max_size=3),
       st.booleans())
def test_channel_config_errors_name_the_key_never_the_secret(channels: dict[str, dict[str, object]],
                                                              broken: bool) -> None:
    lines = []
    for name, body in channels.items():
        lines.append(f"[channels.{name}]")
        lines.extend(f'"{k}" = {_toml(v)}' for k, v in body.items())
    text = "\n".join(lines) + ("\n= broken " + SECRET if broken else "\n")
    try:
        config = parse_config(text, Path("config.toml"))
    except FlowledgerError as exc:
        assert isinstance(exc, InvalidInput) and exc.exit_code == 2
        assert SECRET not in exc.message and SECRET not in repr(exc) and SECRET not in str(exc.args)
        assert "\n" not in exc.message
        return
    assert SECRET not in repr(config)
    for channel in config.channels.values():
        assert SECRET not in repr(channel) and SECRET not in str(channel)
