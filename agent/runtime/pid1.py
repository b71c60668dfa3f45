"""The container's init (PID 1 of its PID namespace): reaping and signals.

Owns what the init does once the application is forked: forward the usual
termination and job-control signals to the application, reap every zombie
of the namespace, and when the application exits write its exit code into
the container's state dir (`exit`, then a poke at `exit.fifo` to wake a
waiter) before exiting with that code. Also owns those state-dir names.

Runs in a process cloned or forked from the zygote, after pivot_root: it
must not import anything lazily, start threads or set up logging; it only
uses os, signal and the already loaded `linux` wrappers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from agent.runtime import linux

EXIT_FILE = "exit"
EXIT_FIFO = "exit.fifo"
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGALRM,
)


def write_exit(dir_fd: int, code: int) -> None:
    fd = os.open("exit.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    os.write(fd, str(code).encode())
    os.close(fd)
    os.rename("exit.tmp", EXIT_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    try:  # wake a waiter at once (ENXIO: nobody is waiting, which is fine)
        fd = os.open(EXIT_FIFO, os.O_WRONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.write(fd, b"x")
    os.close(fd)


def become_init(app: int) -> None:
    """Forward signals to the application; not dumpable; named gantry-init."""

    def forward(sig: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.kill(app, sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    with contextlib.suppress(OSError):
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        linux.set_name("gantry-init")


def reap_forever(app: int, exit_dir: int, *, became: bool = False) -> None:
    """Reap until the application exits, record its code, exit with it.

    `became`: `become_init(app)` was already done (a pool sandbox, ahead of
    its request)."""
    if not became:
        become_init(app)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == app:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            with contextlib.suppress(OSError):
                write_exit(exit_dir, code)
            os._exit(code)
