"""Run in a subprocess by test_fault_injection.py: ``ae-parity train`` (torch, float64) killed or crashed
at many points, then recovered; the test reads the folders this leaves. Prints one JSON object.

    python parity_tests/fault_worker.py MODE DATA_DIR WORK_DIR

Every run (and every recovery) is a forked child of this process, so each costs no interpreter start or
import: the parent imports everything and forks, and runs no torch computation itself (a fork after torch
has started its thread pool is not safe). Each run's folder is copied as the fault left it
(``NAME.crashed``) before the parent recovers it (resume, or a new run where no checkpoint was written).

MODE:
- ``kill``: 28 runs, each ``kill -9``'d at a seeded random instant of its lifetime (half of them new runs,
  half resumes of a 1-epoch run). The lifetimes are measured first; a run that still ended before its
  instant (this machine sped up) is run again with an instant drawn before that one, so every kill lands
  whatever the machine's speed;
- ``steps``: one run per write step (every ``os.open``, ``write``, ``fsync``, ``replace``, ``mkdir``,
  ``unlink`` ... of an uninterrupted run), the process ending (``os._exit``) just before that step;
- ``limits``: a resume under a file-size limit smaller than a checkpoint (the kernel refuses the write:
  EFBIG, as a full disk would), one whose folder refuses new files (a read-only file system, EROFS), and
  two writers started on one folder at once.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ae_parity.commands  # noqa: F401 - everything a child needs, imported once, before any fork
import ae_parity.runner  # noqa: F401
import ae_torch.data  # noqa: F401
import ae_torch.train  # noqa: F401
from ae_parity import cli

try:  # the run's TensorBoard writer, where it is installed
    from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: F401
    from tensorboard.summary.writer import event_file_writer  # noqa: F401
except ImportError:  # pragma: no cover - then a child imports nothing more for it either
    event_file_writer = None

EPOCHS = 2
KILLS = 28
WRITE_STEPS = ("open", "write", "ftruncate", "fsync", "replace", "rename", "mkdir", "unlink", "rmdir")


def argv(data_dir, *more) -> list[str]:
    return ["train", "--framework", "torch", "--preset", "mlp16", "--dtype", "float64", "--batch-size", "50",
            "--limit", "100", "--data", "sample", "--data-dir", str(data_dir), "--no-progress", *more]


def child(run, *, before=None) -> int:
    """Fork; the child runs ``run()`` (its stdout and stderr into files of the work dir) and exits with its
    code; ``before`` runs in the child first (a fault to install)."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        if before is not None:
            before()
        code = run()
    except BaseException as e:  # noqa: B036 - a child never returns into the parent's code
        print(f"child raised {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def train(data_dir, log: Path, *more):
    def run():
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        return cli.main(argv(data_dir, *more))

    return run


def crash_before_step(k: int | None, counter: list):
    """Install: count every write step into ``counter``; ``os._exit(137)`` just before the ``k``-th (k None:
    only count)."""
    def install():
        for name in WRITE_STEPS:
            real = getattr(os, name)

            def step(*args, _real=real, _name=name, **kwargs):
                if _name == "open" and not (args[1] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                    return _real(*args, **kwargs)  # a read
                counter.append(_name)
                if len(counter) == k:
                    os._exit(137)
                return _real(*args, **kwargs)

            setattr(os, name, step)
    return install


def keep_crashed(d: Path) -> None:
    if d.exists():
        shutil.copytree(d, d.with_name(d.name + ".crashed"))


def recover(data_dir, d: Path, log: Path) -> int:
    """Resume a run that has a checkpoint; start one again where it has none (nothing was kept)."""
    more = ("--resume", str(d)) if (d / "checkpoint.safetensors").exists() else ("--out", str(d))
    return wait(child(train(data_dir, log, "--epochs", str(EPOCHS), *more)))


def kills(data_dir, work: Path) -> dict:
    rng = np.random.default_rng(16)
    pid = child(train(data_dir, work / "reference.log", "--epochs", str(EPOCHS),
                      "--out", str(work / "reference")))
    t0 = time.perf_counter()
    assert wait(pid) == 0
    lifetime = time.perf_counter() - t0
    assert wait(child(train(data_dir, work / "base.log", "--epochs", "1", "--out",
                            str(work / "base")))) == 0
    shutil.copytree(work / "base", work / "timed")
    t0 = time.perf_counter()
    assert wait(child(train(data_dir, work / "timed.log", "--epochs", str(EPOCHS), "--resume",
                            str(work / "timed")))) == 0
    lifetimes = (lifetime, time.perf_counter() - t0)  # of a new run, of a resume
    runs = []
    for i in range(KILLS):
        d = work / f"kill{i:02d}"
        limit = 0.95 * lifetimes[i % 2]
        attempts = 0
        while attempts < 8:  # a run that ended before its instant is drawn again, before that instant
            attempts += 1
            if d.exists():
                shutil.rmtree(d)
            if i % 2:  # a resume of the 1-epoch run
                shutil.copytree(work / "base", d)
                more = ("--resume", str(d))
            else:
                more = ("--out", str(d))
            delay = float(rng.uniform(0.0, limit))
            pid = child(train(data_dir, work / f"kill{i:02d}.log", "--epochs", str(EPOCHS), *more))
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            status = wait(pid)
            if status != 0:
                break
            limit = delay  # this run lived less than ``delay``: so does the next one, near enough
        runs.append({"dir": d.name, "delay_s": delay, "status": status, "resume": bool(i % 2),
                     "attempts": attempts})
        keep_crashed(d)
    for r in runs:
        r["recovered"] = recover(data_dir, work / r["dir"], work / f"{r['dir']}.recover.log")
    return {"lifetime_s": lifetimes, "runs": runs}


def steps(data_dir, work: Path) -> dict:
    count_file = work / "steps.json"

    def reference():  # the uninterrupted run, counting its write steps
        seen: list[str] = []
        crash_before_step(None, seen)()
        code = train(data_dir, work / "reference.log", "--epochs", str(EPOCHS), "--out",
                     str(work / "reference"))()
        with open(count_file, "w") as f:  # io.open does not go through the patched os.open
            f.write(json.dumps(seen))
        return code

    assert wait(child(reference)) == 0
    seen = json.loads(count_file.read_text())
    runs = []
    for k in range(1, len(seen) + 1):
        d = work / f"step{k:02d}"
        status = wait(child(train(data_dir, work / f"step{k:02d}.log", "--epochs", str(EPOCHS), "--out", str(d)),
                            before=crash_before_step(k, [])))
        runs.append({"dir": d.name, "step": seen[k - 1], "status": status})
        keep_crashed(d)
    for r in runs:
        r["recovered"] = recover(data_dir, work / r["dir"], work / f"{r['dir']}.recover.log")
    return {"steps": seen, "runs": runs}


def limits(data_dir, work: Path) -> dict:
    out = {}
    assert wait(child(train(data_dir, work / "reference.log", "--epochs", str(EPOCHS),
                            "--out", str(work / "reference")))) == 0
    assert wait(child(train(data_dir, work / "base.log", "--epochs", "1", "--out",
                            str(work / "base")))) == 0
    size = (work / "base" / "checkpoint.safetensors").stat().st_size

    def fsize():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.RLIM_INFINITY))

    def read_only():  # os.open of a new file in the folder fails as on a read-only file system
        real = os.open

        def refuse(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and Path(path).parent.name == "readonly" and not Path(path).exists():
                raise OSError(30, os.strerror(30), str(path))
            return real(path, flags, *args, **kwargs)

        os.open = refuse

    for name, fault in (("fsize", fsize), ("readonly", read_only)):
        d = work / name
        shutil.copytree(work / "base", d)
        status = wait(child(train(data_dir, work / f"{name}.log", "--epochs", str(EPOCHS), "--resume", str(d)),
                            before=fault))
        keep_crashed(d)
        out[name] = {"status": status, "checkpoint_size": size}
    d = work / "concurrent"
    first = child(train(data_dir, work / "concurrent.first.log", "--epochs", str(EPOCHS), "--out", str(d)))
    deadline = time.time() + 60
    while time.time() < deadline and not ((d / ".lock").exists() and str(first) in (d / ".lock").read_text()):
        time.sleep(0.002)
    second = child(train(data_dir, work / "concurrent.second.log", "--epochs", str(EPOCHS), "--out", str(d),
                         "--overwrite"))  # past the check for an existing run: it meets the lock
    out["concurrent"] = {"first": wait(first), "second": wait(second), "first_pid": first}
    for name in ("fsize", "readonly"):
        out[name]["recovered"] = recover(data_dir, work / name, work / f"{name}.recover.log")
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, data_dir, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    report = {"kill": kills, "steps": steps, "limits": limits}[mode](data_dir, work)
    print(json.dumps(report))
