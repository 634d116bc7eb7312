"""The policy in force, hot-reloaded from files and replaced by the UpdatePolicy RPC.

Two files: the base ``policy_file`` (or the shipped default) and the optional
``policy_override_file``, where the operator's ConfigMap is mounted. At start the
override wins when it exists and is valid; after that the latest successful source
wins (file change or RPC). A bad document never replaces a good one: it is logged
with the field it got wrong, counted, and the old policy stays. When the override
file disappears while its policy is in force, the base policy comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tollgate_common.policy import (
    DEFAULT_POLICY_FILE,
    Policy,
    PolicyError,
    load_price_table,
    parse_policy,
)

log = logging.getLogger(__name__)

MAX_POLICY_BYTES = 1024 * 1024
MAX_SOURCE_CHARS = 120
DEFAULT_SOURCE = "default"


@dataclass(frozen=True, slots=True)
class PolicyState:
    policy: Policy
    yaml: str
    version: str
    source: str
    loaded_at: float  # unix time


class StoreListener(Protocol):
    def reloaded(self, trigger: str, result: str) -> None:
        """trigger: startup|file|rpc; result: success|unchanged|failure."""

    def changed(self, old: PolicyState | None, new: PolicyState) -> None: ...


def _read(path: Path) -> str | None:
    """The file's text, or None when it does not exist (normal for the override)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


class PolicyStore:
    """Holds the current policy. Everything runs on the event loop: no locks."""

    def __init__(
        self,
        *,
        policy_file: Path | None,
        override_file: Path | None,
        price_table_file: Path,
        listener: StoreListener | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Load the base policy (raises ``PolicyError`` when it is bad: nothing to
        serve), then the override file if present (a bad one is only logged)."""
        self._listener = listener
        self._clock = clock
        try:
            self._prices: dict[str, dict[str, Any]] = load_price_table(price_table_file)
        except PolicyError:
            raise  # it names the file already
        except (OSError, ValueError) as exc:
            raise PolicyError(f"price_table_file {price_table_file}: {exc}") from exc
        self._base_path = policy_file or DEFAULT_POLICY_FILE
        self._base_source = f"file:{policy_file}" if policy_file else DEFAULT_SOURCE
        self._override_path = override_file
        try:
            text = self._base_path.read_text()
        except OSError as exc:
            raise PolicyError(f"policy_file {self._base_path}: cannot read: {exc}") from exc
        try:
            policy = parse_policy(text, self._prices)
        except PolicyError as exc:
            raise PolicyError(f"policy_file {self._base_path}: {exc}") from exc
        self._seen: dict[Path, str | None] = {self._base_path: text}
        self._base = self._state(policy, text, self._base_source)
        self._override: Policy | None = None
        self._current = self._base
        self._notify_reload("startup", "success")
        if self._listener is not None:
            self._listener.changed(None, self._base)
        log.info("policy loaded", extra={"version": policy.version, "source": self._base_source})
        if override_file is not None:
            self._check(override_file)

    @property
    def current(self) -> PolicyState:
        return self._current

    def _state(self, policy: Policy, text: str, source: str) -> PolicyState:
        return PolicyState(policy, text, policy.version, source, self._clock())

    def _notify_reload(self, trigger: str, result: str) -> None:
        if self._listener is not None:
            self._listener.reloaded(trigger, result)

    def _apply(self, state: PolicyState, trigger: str) -> bool:
        """Make ``state`` current unless it is the same policy; True when it changed."""
        old = self._current
        if state.policy == old.policy:
            self._notify_reload(trigger, "unchanged")
            return False
        self._current = state
        self._notify_reload(trigger, "success")
        if self._listener is not None:
            self._listener.changed(old, state)
        log.info(
            "policy changed",
            extra={
                "version": state.version,
                "source": state.source,
                "previous_version": old.version,
            },
        )
        return True

    def update(self, text: str, source: str) -> tuple[PolicyState, bool]:
        """The UpdatePolicy RPC: raises ``PolicyError`` naming the field; the old
        policy stays. Returns the state in force and whether it changed."""
        source = source.strip()[:MAX_SOURCE_CHARS] or "rpc"
        try:
            if len(text.encode()) > MAX_POLICY_BYTES:
                raise PolicyError(f"policy_yaml: larger than {MAX_POLICY_BYTES} bytes")
            policy = parse_policy(text, self._prices)
        except PolicyError as exc:
            self._notify_reload("rpc", "failure")
            log.error("policy refused", extra={"source": source, "error": str(exc)})
            raise
        changed = self._apply(self._state(policy, text, source), "rpc")
        return self._current, changed

    def poll(self) -> None:
        """Look at both files once; apply what changed since the last look."""
        self._check(self._base_path)
        if self._override_path is not None:
            self._check(self._override_path)

    def _check(self, path: Path) -> None:
        try:
            text = _read(path)
        except OSError as exc:
            text = ""  # unreadable: report it below as a failure, once
            error = f"cannot read: {exc}"
        else:
            error = ""
        if path in self._seen and text == self._seen[path]:
            return
        self._seen[path] = text
        is_override = path == self._override_path
        if text is None:
            self._removed(path, is_override)
            return
        try:
            if error:
                raise PolicyError(error)
            policy = parse_policy(text, self._prices)
        except PolicyError as exc:
            self._notify_reload("file", "failure")
            log.error(
                "policy file refused; keeping the policy in force",
                extra={"file": str(path), "error": str(exc), "version": self._current.version},
            )
            return
        source = f"file:{path}" if is_override else self._base_source
        state = self._state(policy, text, source)
        if is_override:
            self._override = policy
        else:
            self._base = state
        self._apply(state, "file")

    def _removed(self, path: Path, is_override: bool) -> None:
        if not is_override:
            log.warning(
                "policy file disappeared; keeping the policy in force", extra={"file": str(path)}
            )
            return
        if self._override is not None and self._current.policy == self._override:
            log.info("override policy removed; back to the base policy")
            self._override = None
            self._apply(self._state(self._base.policy, self._base.yaml, self._base.source), "file")
        self._override = None

    async def run(self, interval: float) -> None:
        """Poll forever; cancel the task to stop."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.poll()
            except Exception:  # never let the watcher die
                log.exception("policy poll failed")
