"""segtool's command line run in this process, as a shell runs it: arguments in, exit code
and the two streams out."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from segtool.cli.app import main


@dataclass
class Result:
    """What one command line gave: its exit code, its streams, and an exception that escaped
    the error boundary (a SystemExit is how every command ends, and is not kept)."""

    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def output(self) -> str:
        """stdout, then stderr."""
        return self.stdout + self.stderr


#: A wide terminal: each of typer's usage errors fits on one line, as tests read it.
WIDE = {"COLUMNS": "300"}


def invoke(args: list, env: dict[str, str] | None = None) -> Result:
    """Run ``segtool ARGS`` (each argument as text) with `env` added to the environment."""
    env = {**WIDE, **(env or {})}
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    exception = None
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # an escaped exception is what tests look for
        code, exception = 1, exc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Result(code, out.getvalue(), err.getvalue(), exception)
