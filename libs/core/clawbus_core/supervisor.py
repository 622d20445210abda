"""A small process supervisor for `clawbus up`: keep every service running until told to stop.

Each child runs in its own session (process group), so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children itself: SIGTERM to every child's process group at once,
SIGKILL to whatever is left after `stop_timeout_s`. A child that exits on its own is restarted
after an exponential backoff, reset once a run lasted `stable_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]


class Supervisor:
    def __init__(
        self,
        specs: list[ProcessSpec],
        *,
        log: Callable[[str], None],
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 30.0,
        stop_timeout_s: float = 20.0,
    ) -> None:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"process names must be unique: {names}")
        self._specs = list(specs)
        self._log = log
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._stable_after_s = stable_after_s
        self._stop_timeout_s = stop_timeout_s
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    def pids(self) -> dict[str, int]:
        """PIDs of the children running now, by name."""
        return {name: p.pid for name, p in self._procs.items() if p.returncode is None}

    async def run(self, stop: asyncio.Event) -> None:
        """Run every child until `stop` is set (or this task is cancelled), then stop them all."""
        self._stopping = asyncio.Event()
        keepers = [asyncio.create_task(self._keep_running(spec)) for spec in self._specs]
        try:
            stopped = asyncio.create_task(stop.wait())
            try:
                # A keeper only ends early by crashing: surface that instead of hanging.
                await asyncio.wait([stopped, *keepers], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
        finally:
            self._stopping.set()
            # Keepers return promptly once _stopping is set; never cancel one mid-spawn, or a
            # child could start without being recorded.
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._stop_children()
        for keeper in keepers:
            error = None if keeper.cancelled() else keeper.exception()
            if error is not None:
                raise error

    async def _keep_running(self, spec: ProcessSpec) -> None:
        backoff = self._min_backoff_s
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *spec.argv, env=spec.env, start_new_session=True
                )
            except OSError as err:
                outcome = f"could not start ({err})"
            else:
                self._procs[spec.name] = proc
                self._log(f"started {spec.name} (pid {proc.pid})")
                if not await self._until_stopping(proc.wait()):
                    return  # stopping: run() stops the child
                outcome = f"exited with code {proc.returncode}"
            if self._stopping.is_set():
                self._log(f"{spec.name} {outcome}")
                return
            if time.monotonic() - started >= self._stable_after_s:
                backoff = self._min_backoff_s
            delay, backoff = backoff, min(backoff * 2, self._max_backoff_s)
            self._log(f"{spec.name} {outcome}; restarting in {delay:.1f}s")
            if not await self._until_stopping(asyncio.sleep(delay)):
                return

    async def _until_stopping(self, aw: Awaitable[object]) -> bool:
        """Await aw unless stopping begins first; True when aw finished."""
        task = asyncio.ensure_future(aw)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
        return task.done() and not task.cancelled()

    async def _stop_children(self) -> None:
        running = {n: p for n, p in self._procs.items() if p.returncode is None}
        if not running:
            return
        self._log(f"stopping {', '.join(running)}")
        for proc in running.values():
            _signal_group(proc, signal.SIGTERM)
        waits = {n: asyncio.create_task(p.wait()) for n, p in running.items()}
        _, pending = await asyncio.wait(waits.values(), timeout=self._stop_timeout_s)
        for name, wait in waits.items():
            if wait in pending:
                self._log(
                    f"{name} did not exit within {self._stop_timeout_s:.1f}s of SIGTERM; killing it"
                )
                _signal_group(running[name], signal.SIGKILL)
        if pending:
            await asyncio.wait(pending)


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the child's process group (its own session: pgid == pid) while it is unreaped."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
