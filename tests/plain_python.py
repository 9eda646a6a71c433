"""Scripts run in a Python where mm_st cannot be imported (plain sentence-transformers loading what mm_st saved),
each in a process of its own, without each paying the imports of torch, transformers and sentence-transformers.

One server process per pytest worker (the session fixture ``plain_python`` in tests/conftest.py) starts like the
scripts did (``python -c``, the suite's environment), makes ``mm_st`` unimportable (``sys.modules["mm_st"] = None``,
what every such script does first), imports sentence-transformers, then forks once per script: the script runs in a
fresh child process (its own ``sys.argv``, working directory, stdout and stderr), as it would in
``python -c <script> <args>``, and the child's exit status is the script's. Code loaded with trust_remote_code goes
to the server's own ``HF_MODULES_CACHE`` folder (never the user's, nor another worker's). No state passes from one script to the
next: each child starts from the server's state right after the imports, and mm_st is never imported there."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = r'''
import json, os, sys, traceback
sys.modules["mm_st"] = None  # mm_st cannot be imported in this process or its children
import torch
torch.set_num_threads(1)
import numpy, PIL.Image, sentence_transformers  # noqa: F401  (what the scripts import first)


def run(request):
    """In the forked child: run the script as `python -c` would, then exit with its status."""
    os.chdir(request["cwd"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = ["-c", *request["args"]]
    sys.path[0] = ""
    code = 0
    try:
        exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            run(request)
        finally:
            os._exit(70)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class PlainPython:
    """The server process; :meth:`run` runs one script (like ``subprocess.run([python, "-c", code, *args])``)."""

    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="mm_st_plain_python_")
        # code that trust_remote_code loads goes to the server's own folder (read by transformers at import)
        env = {**os.environ, "HF_MODULES_CACHE": str(Path(self.folder.name) / "hf_modules")}
        self.process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env, start_new_session=True)  # its own group: killed with it
        self.count = 0

    def _reply(self, timeout: float) -> str:
        """The server's next line; after ``timeout`` seconds the server and the script it runs are killed."""
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired(self.process.args, timeout)
        return self.process.stdout.readline()

    def run(self, code: str, *args: str, cwd: str | Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``code`` with ``args`` as ``sys.argv[1:]`` in a fresh child process; its output and exit status."""
        if self.count == 0 and self._reply(timeout).strip() != "ready":
            raise RuntimeError(f"the plain-Python server did not start (exit status {self.process.wait()})")
        self.count += 1
        out, err = (Path(self.folder.name) / f"{self.count}.{name}" for name in ("out", "err"))
        request = {"code": code, "args": list(args), "cwd": str(cwd or Path.cwd()), "stdout": str(out), "stderr": str(err)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self._reply(timeout)
        if not reply:
            raise RuntimeError(f"the plain-Python server exited (status {self.process.wait()})")
        returncode = json.loads(reply)["returncode"]
        return subprocess.CompletedProcess(["python", "-c", code, *args], returncode, out.read_text(), err.read_text())

    def close(self) -> None:
        self.process.stdin.close()
        if self.process.poll() is None:  # idle between scripts: nothing to finish (its shutdown takes seconds)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=60)
        self.folder.cleanup()
