"""Keep `make run`'s services up: restart a crashed one with exponential backoff, and give
up, loudly, on one that cannot start.

One thread polls every process; nothing blocks for long, so a stop request (Ctrl-C,
SIGTERM) is honoured within a tick, and the other services keep serving while one is
down (the orchestrator degrades without its router or cache).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from tools.stack import Proc, Service, Stack

TICK_SECONDS = 0.1


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart, and when to stop trying.

    Backoff: ``first_delay`` doubling per crash in a row, at most ``max_delay``. A service
    that stayed up ``stable_after`` seconds starts again from ``first_delay``.

    Give-up rule: ``max_start_failures`` exits in a row, each before the service became
    ready, mean it cannot start (a bad setting, a busy port): restarting again would only
    hide the reason, so everything stops and the log tail is shown. A service that became
    ready between crashes is restarted for as long as it takes (at most every ``max_delay``).
    The first start of a fresh run is not retried at all (see ``Supervisor.start``).
    """

    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 60.0
    max_start_failures: int = 5
    ready_timeout: float = 30.0  # a restarted process not ready by then counts as failed

    def delay(self, crashes: int) -> float:
        """Seconds before the restart after ``crashes`` crashes in a row (1 = the first)."""
        return float(min(self.max_delay, self.first_delay * 2 ** max(crashes - 1, 0)))


@dataclass
class CrashHistory:
    """One service's exits, as the restart rule needs them."""

    crashes: int = 0  # in a row, with no stable run in between: drives the backoff
    start_failures: int = 0  # in a row, each before the service became ready
    restarts: int = 0

    def record(self, policy: RestartPolicy, *, was_ready: bool, uptime: float) -> float | None:
        """Note an exit; return the delay before the restart, or None to give up."""
        if was_ready and uptime >= policy.stable_after:
            self.crashes = 0
        self.crashes += 1
        self.start_failures = 0 if was_ready else self.start_failures + 1
        if self.start_failures >= policy.max_start_failures:
            return None
        return policy.delay(self.crashes)


def ordinal(n: int) -> str:
    """1 -> 1st, 2 -> 2nd, 11 -> 11th, 23 -> 23rd."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe_exit(code: int | None) -> str:
    """Popen's returncode in words: a negative one is the signal that killed it."""
    if code is None:
        return "an unknown exit code"
    if code < 0:
        try:
            return f"exit code {code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"exit code {code}"
    return f"exit code {code}"


@dataclass
class Watched:
    service: Service
    proc: Proc
    started: float
    ready: bool = False
    history: CrashHistory = field(default_factory=CrashHistory)
    restart_at: float | None = None  # set while waiting out the backoff


class Supervisor:
    def __init__(
        self,
        stack: Stack,
        policy: RestartPolicy | None = None,
        out: TextIO | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.stack = stack
        self.policy = policy or RestartPolicy()
        self.out = out or sys.stderr
        self.on_change = on_change  # after every (re)start: run.py rewrites run.json
        self.watched: dict[str, Watched] = {}
        self.stop_requested = False
        self.gave_up = False

    def say(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} tollgate run: {msg}", file=self.out, flush=True)

    def request_stop(self, *_: object) -> None:
        """A signal handler: only sets a flag, so a stop never interrupts a spawn halfway."""
        self.stop_requested = True

    def start(self) -> str | None:
        """Start every service in order, each ready before the next; an error message if
        one exits or is not ready in time. Not retried: on a fresh run that is a setting
        or a busy port, and the message says which."""
        for service in self.stack.planned():
            proc = self.stack.launch(service, wait=False)
            w = self.watched[service.name] = Watched(service, proc, time.monotonic())
            self.on_change()
            deadline = w.started + self.policy.ready_timeout
            while not service.ready():
                if self.stop_requested:
                    return None
                if proc.exited():
                    code = proc.stop()
                    return (
                        f"{service.name} exited during start with {describe_exit(code)}; "
                        f"last lines of {proc.log_path}:\n{proc.log_tail(20)}"
                    )
                if time.monotonic() > deadline:
                    return (
                        f"{service.name} not ready after {self.policy.ready_timeout:g} s; "
                        f"last lines of {proc.log_path}:\n{proc.log_tail(20)}"
                    )
                time.sleep(0.05)
            w.ready = True
        return None

    def run(self) -> int:
        """Watch until a stop is requested (0) or a service cannot start (1)."""
        while not self.stop_requested and not self.gave_up:
            for w in self.watched.values():
                self._tick(w, time.monotonic())
                if self.gave_up:
                    break
            time.sleep(TICK_SECONDS)
        return 1 if self.gave_up else 0

    def _tick(self, w: Watched, now: float) -> None:
        if w.restart_at is not None:
            if now >= w.restart_at:
                self._restart(w, now)
        elif w.proc.exited():
            self._exited(w, w.proc.stop(), now)  # stop(): reap it and kill what it left
        elif not w.ready:
            if w.service.ready():
                w.ready = True
                self.say(f"{w.service.name} is ready again")
            elif now - w.started > self.policy.ready_timeout:
                self.say(f"{w.service.name} not ready after {self.policy.ready_timeout:g} s")
                self._exited(w, w.proc.stop(), now)

    def _exited(self, w: Watched, code: int | None, now: float) -> None:
        name, uptime = w.service.name, now - w.started
        delay = w.history.record(self.policy, was_ready=w.ready, uptime=uptime)
        if delay is None:
            self.gave_up = True
            self.say(
                f"{name} failed to start {w.history.start_failures} times in a row "
                f"(last: {describe_exit(code)}); giving up and stopping everything. "
                f"Last lines of {w.proc.log_path}:\n{w.proc.log_tail(20)}"
            )
            return
        self.say(
            f"{name} exited with {describe_exit(code)} after {uptime:.1f} s "
            f"(log: {w.proc.log_path}); restarting in {delay:g} s"
        )
        w.restart_at = now + delay
        self.on_change()

    def _restart(self, w: Watched, now: float) -> None:
        w.history.restarts += 1
        nth = ordinal(w.history.restarts)
        with w.proc.log_path.open("a") as log:  # mark where the new run begins
            log.write(f"\n--- {time.strftime('%H:%M:%S')} tollgate run: {nth} restart ---\n")
        # The same Service: the same command, env and ports as the first start.
        w.proc = self.stack.launch(w.service, wait=False, append=True)
        w.started, w.ready, w.restart_at = now, False, None
        self.say(f"{w.service.name} restarted ({nth} time), pid {w.proc.popen.pid}")
        self.on_change()

    def snapshot(self) -> dict[str, Any]:
        """Per service: pid (None while waiting to restart), restarts and log file."""
        return {
            name: {
                "pid": None if w.restart_at is not None else w.proc.popen.pid,
                "restarts": w.history.restarts,
                "log": str(w.proc.log_path),
            }
            for name, w in self.watched.items()
        }
