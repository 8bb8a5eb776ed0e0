"""Resource faults: a full disk (a small tmpfs when we may mount, else RLIMIT_FSIZE) and a read-only database.
Each gives one clear line and exit 3 from the CLI, leaves no partial record, and a long-lived writer recovers as
soon as space returns."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import harness
import pytest

from flowledger import Ledger
from flowledger.tasks.core.errors import StorageUnavailable
from flowledger.tasks.core.states import TaskStatus

CLI = [sys.executable, "-m", "flowledger.cli.main"]


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB filesystem of our own (tmpfs), unmounted afterwards."""
    where = tmp_path / "disk"
    if not _mount_tmpfs(where, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers a full disk")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the filesystem refuses, down to the last 512 bytes: the disk is now full."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def cli(state_dir: Path, *args: str, preexec: object = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--state-dir", str(state_dir), *args], capture_output=True, text=True,
                          check=False, timeout=60, preexec_fn=preexec)  # type: ignore[arg-type]


def assert_one_clear_line(done: subprocess.CompletedProcess[str], code: int = 3) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def seed_running(state_dir: Path, run_id: str = "run-disk") -> str:
    with Ledger.open(state_dir=state_dir) as ledger:
        task = ledger.tasks.create(runtime="cli", task="write a lot", owner_key="agent:main:main", run_id=run_id,
                                   status="running")
    return task.task_id


def history(state_dir: Path, task_id: str) -> tuple[TaskStatus, int]:
    with Ledger.open(state_dir=state_dir) as ledger:
        task = ledger.tasks.get(task_id)
        assert task is not None
        return task.status, len(ledger.tasks.events(task_id))


def test_full_disk_cli_write_exits_3_with_one_line_and_no_partial_record(small_disk: Path) -> None:
    state_dir = small_disk / "state"
    task_id = seed_running(state_dir)
    before = history(state_dir, task_id)
    filler = fill(small_disk)

    done = cli(state_dir, "tasks", "cancel", task_id)
    line = assert_one_clear_line(done)
    assert line.startswith("Storage unavailable:"), line

    filler.unlink()  # space returns: nothing half-written is waiting for us
    assert history(state_dir, task_id) == before
    again = cli(state_dir, "tasks", "cancel", task_id)
    assert again.returncode == 0, again.stderr
    assert history(state_dir, task_id)[0] == TaskStatus.CANCELLED


def test_long_lived_writer_survives_a_full_disk_and_recovers(small_disk: Path) -> None:
    state_dir = small_disk / "state"
    with Ledger.open(state_dir=state_dir) as ledger:
        ledger.tasks.create(runtime="cli", task="before", owner_key="agent:main:main", run_id="r-0", status="running")
        filler = fill(small_disk)
        refused = 0
        for n in range(1, 6):  # every attempt fails cleanly; none leaves a row or an event behind
            with pytest.raises(StorageUnavailable, match="Storage unavailable"):
                ledger.tasks.create(runtime="cli", task=f"during {n} " + "x" * 4096, owner_key="agent:main:main",
                                    run_id=f"r-{n}", status="running")
            with pytest.raises(StorageUnavailable, match="Storage unavailable"):
                ledger.tasks.complete("r-0")
            refused += 1
        filler.unlink()
        ledger.tasks.create(runtime="cli", task="after", owner_key="agent:main:main", run_id="r-9", status="running")
        ledger.tasks.complete("r-0")
        ledger.tasks.complete("r-9")
        tasks = {t.task: t.status for t in ledger.tasks.list()}
        verdict = harness.verify(ledger)
        integrity = harness.integrity_ok(ledger)
    assert refused == 5
    assert tasks == {"before": TaskStatus.SUCCEEDED, "after": TaskStatus.SUCCEEDED}
    assert verdict.ok, verdict.violations
    assert integrity == "ok"


def test_a_core_write_refused_at_commit_by_a_full_disk_leaves_the_writer_usable(small_disk: Path) -> None:
    """A lease renewal writes through SQLAlchemy Core; a full disk refuses its COMMIT and SQLite rolls the
    transaction back. SQLAlchemy keeps its own transaction on the connection, inactive, until a rollback: a
    write connection kept so answered every later write "Can't reconnect until invalid transaction is rolled
    back", and a gateway whose disk filled up never came back once space returned."""
    state_dir = small_disk / "state"
    with Ledger.open(state_dir=state_dir) as ledger:
        ledger.runs.renew_lease("gw-disk", host="h", pid=1, ttl=timedelta(minutes=1))
        filler = fill(small_disk)
        for _ in range(3):
            with pytest.raises(StorageUnavailable, match="disk is full"):
                ledger.runs.renew_lease("gw-disk", host="h", pid=1, ttl=timedelta(minutes=1))
        filler.unlink()
        ledger.runs.renew_lease("gw-disk", host="h", pid=1, ttl=timedelta(minutes=1))
        ledger.tasks.create(runtime="cli", task="after", owner_key="agent:main:main", run_id="r-after")
        assert "gw-disk" in ledger.runs.fresh_gateways()
        assert ledger.tasks.require("r-after").task == "after"


def test_read_only_database_exits_3_with_one_line(small_disk: Path) -> None:
    state_dir = small_disk / "state"
    task_id = seed_running(state_dir)
    before = history(state_dir, task_id)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, check=False)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remount.stderr!r}")
    try:
        line = assert_one_clear_line(cli(state_dir, "tasks", "cancel", task_id))
        assert line.startswith("Storage unavailable:"), line
        notify = assert_one_clear_line(cli(state_dir, "tasks", "notify", task_id, "silent"))
        assert notify.startswith("Storage unavailable:"), notify
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=False)
    assert history(state_dir, task_id) == before


def _limit_file_size(limit: int) -> object:
    def apply() -> None:
        # Without SIG_IGN the kernel kills the writer with SIGXFSZ; ignored, the write fails with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_cli_write_exits_3_with_one_line(tmp_path: Path) -> None:
    """The `ulimit -f` variant of a full disk, which works without root."""
    state_dir = tmp_path / "state"
    task_id = seed_running(state_dir)
    before = history(state_dir, task_id)
    done = cli(state_dir, "tasks", "cancel", task_id, preexec=_limit_file_size(1024))
    line = assert_one_clear_line(done)
    assert line.startswith("Storage unavailable:"), line
    assert history(state_dir, task_id) == before
    assert cli(state_dir, "tasks", "cancel", task_id).returncode == 0


def test_gateway_keeps_running_on_a_full_disk_and_recovers(small_disk: Path) -> None:
    """A real gateway whose disk fills up: its sweeps and lease renewals fail, it stays up, and once space
    returns it claims and finishes new work."""
    state_dir = small_disk / "state"
    seed_running(state_dir, "run-before")
    log = small_disk.parent / "gateway.log"
    env = {**os.environ, "FLOWLEDGER_LEASE_TTL_MS": "1500", "FLOWLEDGER_SWEEP_FIRST_MS": "100",
           "FLOWLEDGER_SWEEP_INTERVAL_MS": "200"}
    with log.open("wb") as sink:
        gateway = subprocess.Popen([*CLI, "--state-dir", str(state_dir), "gateway", "--log-level", "info"],
                                   stdout=subprocess.DEVNULL, stderr=sink, env=env)
    try:
        _poll(lambda: "gateway ready" in log.read_text(errors="replace"), gateway, log)
        filler = fill(small_disk)
        # It must notice (a lease renewal or a sweep write fails with one clear line) and stay up.
        _poll(lambda: "Storage unavailable: database or disk is full" in log.read_text(errors="replace"),
              gateway, log)
        assert gateway.poll() is None, log.read_text(errors="replace")[-2000:]
        filler.unlink()
        with Ledger.open(state_dir=state_dir) as ledger:
            from flowledger.scheduler import queue

            task = queue.enqueue(ledger, ["true"], label="after the disk filled up")

            def finished() -> bool:
                current = ledger.tasks.get(task.task_id)
                return current is not None and current.status == TaskStatus.SUCCEEDED

            _poll(finished, gateway, log)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    assert gateway.returncode == 0, log.read_text(errors="replace")[-2000:]


def _poll(condition: object, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, f"gateway exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.05)


def test_run_whose_output_fills_the_disk_exits_3_with_one_line(small_disk: Path) -> None:
    """Issue 12 item 6: the child's own output fills the disk; `run` says so on one line (exit 3), no traceback."""
    state_dir = small_disk / "state"
    seed_running(state_dir, "run-seed")  # the database exists before the disk fills
    done = cli(state_dir, "run", "--", "sh", "-c", "head -c 8000000 /dev/zero; echo done")
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3 and lines == ["Storage unavailable: database or disk is full"], done.stderr
    for leftover in small_disk.glob("state/logs/*.out"):
        leftover.unlink()  # space returns
    with Ledger.open(state_dir=state_dir) as ledger:
        ran = [t for t in ledger.tasks.list() if t.run_id != "run-seed"]
    # Ended, not left `running` until the lost grace: a checkpoint made room in the WAL for that one write.
    assert len(ran) == 1 and ran[0].status == TaskStatus.FAILED
