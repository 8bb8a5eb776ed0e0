"""The submission context of a detached flow (CONTRACT §7): the allow-list, never FLOWLEDGER_*, and relative
paths resolved against the submitter's directory."""

from __future__ import annotations

import pytest

from flowledger.flows.context import SubmissionContext, capture, from_document
from flowledger.flows.definitions import FlowFileError, parse_flow

ENVIRON = {"PATH": "/usr/bin", "HOME": "/home/me", "LANG": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC",
           "FLOWLEDGER_DATABASE_URL": "postgresql://secret", "FLOWLEDGER_STATE_DIR": "/s", "AWS_SECRET": "x",
           "CI": "1", "LCX": "not a locale"}


def test_capture_keeps_the_allow_list_and_the_flows_pass_env_only() -> None:
    context = capture("/work/here", ENVIRON, pass_env=("CI", "MISSING"))
    assert context.cwd == "/work/here"
    assert context.env == {"PATH": "/usr/bin", "HOME": "/home/me", "LANG": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC",
                           "CI": "1"}


def test_flowledger_variables_never_pass_even_when_named() -> None:
    assert "FLOWLEDGER_STATE_DIR" not in capture("/", ENVIRON, pass_env=("FLOWLEDGER_STATE_DIR",)).env
    stored = {"cwd": "/w", "env": {"PATH": "/bin", "FLOWLEDGER_DATABASE_URL": "sqlite://"}}
    restored = from_document(stored)
    assert restored is not None and restored.env == {"PATH": "/bin"}


def test_a_relative_cwd_is_made_absolute(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(str(tmp_path))
    assert capture(".", {}).cwd == str(tmp_path)


@pytest.mark.parametrize(("step_cwd", "expected"), [
    (None, "/work/here"), ("sub", "/work/here/sub"), ("../other", "/work/other"), ("/abs", "/abs"),
])
def test_step_cwd_resolves_against_the_submitters_directory(step_cwd: str | None, expected: str) -> None:
    assert SubmissionContext("/work/here").step_cwd(step_cwd) == expected


def test_step_env_lies_on_top_of_the_captured_env() -> None:
    context = SubmissionContext("/w", {"PATH": "/bin", "LANG": "C"})
    assert context.step_env({"LANG": "de_DE", "X": "1"}) == {"PATH": "/bin", "LANG": "de_DE", "X": "1"}


@pytest.mark.parametrize("document", [None, "x", {"cwd": "relative", "env": {}}, {"cwd": "/w"},
                                      {"cwd": "/w", "env": []}])
def test_an_unusable_stored_context_is_none(document: object) -> None:
    assert from_document(document) is None


def test_round_trip() -> None:
    context = capture("/w", ENVIRON)
    assert from_document(context.to_document()) == context


FLOW = '[flow]\ngoal = "g"\n{extra}\n[[step]]\nid = "a"\nrun = ["true"]\n'


def test_pass_env_parses_and_round_trips() -> None:
    definition = parse_flow(FLOW.format(extra='pass_env = ["CI", "GITHUB_SHA", "CI"]'))
    assert definition.pass_env == ("CI", "GITHUB_SHA")
    assert definition.to_document()["flow"]["pass_env"] == ["CI", "GITHUB_SHA"]
    assert "pass_env" not in parse_flow(FLOW.format(extra="")).to_document()["flow"]


@pytest.mark.parametrize(("extra", "message"), [
    ('pass_env = "CI"', "[flow] pass_env must be an array of variable names"),
    ('pass_env = ["A=B"]', "[flow] pass_env[0] must be a variable name"),
    ("pass_env = [1]", "[flow] pass_env[0] must be a variable name"),
    ('pass_env = ["FLOWLEDGER_DATABASE_URL"]', "[flow] pass_env cannot pass 'FLOWLEDGER_DATABASE_URL'"),
])
def test_pass_env_rejections(extra: str, message: str) -> None:
    with pytest.raises(FlowFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_flow(FLOW.format(extra=extra))
