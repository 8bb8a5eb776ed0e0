"""The house's rooms (tasks/__init__.py): old flat import paths still work, and the pure modules stay pure."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("old", "new"), [
    ("flowledger.tasks.states", "flowledger.tasks.core.states"),
    ("flowledger.tasks.errors", "flowledger.tasks.core.errors"),
    ("flowledger.tasks.service", "flowledger.tasks.core.service"),
    ("flowledger.tasks.status_card", "flowledger.tasks.health.status_card"),
    ("flowledger.tasks.delivery_rules", "flowledger.tasks.delivery.rules"),
    ("flowledger.tasks.session_events", "flowledger.tasks.sessions.events"),
    ("flowledger.tasks.liveness", "flowledger.tasks.runs.liveness"),
])
def test_a_flat_path_of_before_the_rooms_is_the_very_module_of_its_new_home(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_from_import_of_an_old_flat_module_works() -> None:
    from flowledger.tasks import clock, states  # noqa: F401  (the import is the test)
    from flowledger.tasks.states import TaskStatus

    assert TaskStatus.QUEUED.value == "queued"


def test_an_unknown_name_under_tasks_is_still_an_import_error() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("flowledger.tasks.no_such_module")


def test_the_audit_is_pure_it_imports_no_database_library() -> None:
    code = ("import sys, flowledger.tasks.health.audit, flowledger.tasks.core.rules; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'sqlmodel'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("old", ["InvalidInput", "TaskNotFound", "FlowNotFound", "OperationRefused",
                                 "StorageUnavailable"])
def test_an_exception_name_of_before_the_error_rule_is_the_same_class(old: str) -> None:
    import flowledger
    from flowledger.tasks.core import errors

    assert getattr(flowledger, old) is getattr(flowledger, f"{old}Error") is getattr(errors, f"{old}Error")


def test_every_exception_class_ends_in_error() -> None:
    import flowledger

    exported = [getattr(flowledger, name) for name in flowledger.__all__]
    classes = {c for c in exported if isinstance(c, type) and issubclass(c, BaseException)}
    assert classes and all(c.__name__.endswith("Error") for c in classes)
