"""Writing files when the machine says no (issue 16, items 8, 9, 15): one WriteError naming the file and the
cause, the previous file kept, no temp file left; a killed writer's temp files removed by the next holder of
the folder's lock; new files with the permissions the umask gives."""

import errno
import os
import stat
import subprocess
import sys

import pytest

from ae_core.files import WriteError, atomic_write, remove_stale_temps
from ae_parity.exits import FAILED, failure
from ae_parity.rundir import RunLock


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_file_size_limit_is_one_error_and_keeps_the_previous_file(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the write (EFBIG; Python ignores SIGXFSZ), as a full disk would."""
    target = tmp_path / "checkpoint.safetensors"
    target.write_bytes(b"previous")
    code = ("import resource, sys\nfrom ae_core.files import atomic_write, WriteError\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))\n"
            "try:\n    atomic_write(sys.argv[1], b'x' * 100_000)\n"
            "except WriteError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"cannot write {target}: File too large (EFBIG)"
    assert target.read_bytes() == b"previous" and leftovers(tmp_path) == []


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device (ENOSPC)"),
                                        (errno.EROFS, "Read-only file system (EROFS)"),
                                        (errno.EACCES, "Permission denied (EACCES)")])
def test_a_failing_write_is_one_error_and_keeps_the_previous_file(tmp_path, monkeypatch, code, text):
    """The kernel reports a full disk at write or fsync time; the fsync stands in for it here (a real full
    file system cannot be made without privileges this suite does not assume)."""
    target = tmp_path / "metrics.json"
    target.write_text("{}")

    def refuse(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(WriteError) as info:
        atomic_write(target, b'{"epochs": []}')
    assert str(info.value) == f"cannot write {target}: {text}"
    assert target.read_text() == "{}" and leftovers(tmp_path) == []
    assert failure(info.value, "train") == (FAILED, f"ae-parity train: error: cannot write {target}: {text}")


def test_a_folder_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"cannot write .*/file/run/metrics.json: (File exists|Not a directory)"):
        atomic_write(tmp_path / "file" / "run" / "metrics.json", b"{}")


def test_an_os_error_elsewhere_is_one_line_exit_1():
    e = PermissionError(errno.EACCES, "Permission denied", "/runs/x/tensorboard/events")
    assert failure(e, "train") == (FAILED, "ae-parity train: error: /runs/x/tensorboard/events: Permission denied")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    """Item 15: every file was 0600 (tempfile.mkstemp's mode) whatever the umask."""
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "f", b"x")
        atomic_write(tmp_path / "f", b"y")  # a replaced file too
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == mode


def test_a_killed_writers_temp_files_are_removed_by_the_next_lock_holder(tmp_path):
    """Item 9: a kill -9 mid-write leaves the temp file (nothing can remove it then); the next process to
    lock the folder removes it, and only it."""
    stale = [tmp_path / ".checkpoint.safetensors.0a1b2c3d.tmp", tmp_path / ".metrics.json.ffffffff.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    mine = [tmp_path / ".notes.tmp", tmp_path / "draft.tmp", tmp_path / ".a.b.toolong123.tmp"]
    for p in mine:
        p.write_text("the user's")
    with RunLock(tmp_path) as lock:
        assert sorted(lock.removed) == sorted(stale)
    assert sorted(leftovers(tmp_path)) == sorted(p.name for p in mine)
    assert remove_stale_temps(tmp_path) == []
