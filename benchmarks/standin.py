"""Zinrelo's stand-in (the project's sandbox) in a process of its own, for the benchmarks.

The real Zinrelo never shares the shop's interpreter: started in the benchmark's process, the
sandbox's request handling would compete for the same interpreter lock as the client it serves,
lowering the ceiling and flattering every ratio against it. The child is this file run as a
script; it prints its URL, then answers one command per line on its standard input:
``count`` (requests served so far), ``latency SECONDS``, ``reset``. Closing its input stops it.

    python benchmarks/standin.py --latency 0.02     # by hand: prints the URL, Ctrl-D stops it
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent


class StandIn:
    """The child process, driven through its pipes; a context manager."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self._child: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> StandIn:
        self._child = subprocess.Popen(  # noqa: S603 - this file, this interpreter
            [sys.executable, __file__, "--latency", str(self.latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.url = self._read()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        child = self._child
        if child is None:
            return
        self._child = None
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _read(self) -> str:
        assert self._child is not None
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line:
            raise RuntimeError("The stand-in process ended without answering.")
        return line.strip()

    def _ask(self, command: str) -> str:
        assert self._child is not None
        assert self._child.stdin is not None
        self._child.stdin.write(command + "\n")
        self._child.stdin.flush()
        return self._read()

    @property
    def requests(self) -> int:
        """How many requests the stand-in has served since it started (or was reset)."""
        return int(self._ask("count"))

    def set_latency(self, seconds: float) -> None:
        self._ask(f"latency {seconds}")
        self.latency = seconds

    def reset(self) -> None:
        self._ask("reset")


def serve(latency: float) -> None:
    sys.path.insert(0, str(ROOT))
    from django_zinrelo.sandbox import ZinreloSandbox

    with ZinreloSandbox(latency=latency, refusals={}) as sandbox:
        print(sandbox.url, flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "count":
                print(len(sandbox.requests), flush=True)
            elif command == "latency":
                sandbox.latency = float(argument)
                print("ok", flush=True)
            elif command == "reset":
                sandbox.reset()
                print("ok", flush=True)
            else:
                print(f"unknown command {command!r}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.02, help="seconds before each answer")
    serve(parser.parse_args().latency)
