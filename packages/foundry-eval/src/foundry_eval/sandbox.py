"""Running generated code in a sandboxed subprocess: no network, CPU/memory/time limits, temp cwd.

The child is a fresh ``python -I`` process. Before the candidate code runs it:
- lowers its resource limits with ``resource.setrlimit`` (CPU seconds, address space, file size,
  number of processes, open files),
- loses network access: it tries ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` (an empty network
  namespace) and, in any case, replaces ``socket.socket`` and friends with a function that raises,
- cannot start processes: ``RLIMIT_NPROC`` is 0 and, since that limit does not bind root, the
  ``os`` process functions and ``subprocess.Popen`` are replaced too,
- runs in a fresh temporary directory that is deleted afterwards.
The parent enforces a wall-clock timeout and kills the child's process group on expiry.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass

__all__ = ["SandboxLimits", "run_python_tests"]


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    max_processes: int = 0
    max_file_bytes: int = 1 << 20


_HARNESS = r"""
import ctypes, json, os, resource, socket, sys, types
cfg = json.loads(sys.stdin.read())
lim = cfg["limits"]
def _set(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass
_set(resource.RLIMIT_CPU, lim["cpu_s"])
_set(resource.RLIMIT_AS, lim["memory_bytes"])
_set(resource.RLIMIT_FSIZE, lim["max_file_bytes"])
_set(resource.RLIMIT_NOFILE, 64)
isolated = False
try:
    libc = ctypes.CDLL(None, use_errno=True)
    isolated = libc.unshare(0x10000000 | 0x40000000) == 0  # CLONE_NEWUSER | CLONE_NEWNET
except Exception:
    isolated = False
def _no_network(*args, **kwargs):
    raise PermissionError("network and process creation are disabled in the foundry-eval sandbox")
for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd"):
    setattr(socket, name, _no_network)
_set(resource.RLIMIT_NPROC, lim["max_processes"])
# RLIMIT_NPROC does not bind root, so process creation is also disabled at the Python level.
import subprocess
for name in ("fork", "forkpty", "system", "popen", "execv", "execve", "execvp", "execvpe", "execl",
             "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
             "posix_spawn", "posix_spawnp", "kill", "killpg"):
    if hasattr(os, name):
        setattr(os, name, _no_network)
subprocess.Popen = _no_network
sys.dont_write_bytecode = True
_nonce = cfg.pop("nonce")
_out = sys.__stdout__
_dumps = json.dumps
_sandbox = os.path.realpath(os.getcwd())
_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_NUMBERS = (int, float, complex, bool)
def _same(got, want):
    # Built-in types all the way down (numbers compare across int/float/bool, as == does): an
    # object whose __eq__ always says True never matches.
    if type(got) in _NUMBERS and type(want) in _NUMBERS:
        return got == want
    if type(got) is not type(want):
        return False
    if isinstance(got, (list, tuple)):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want))
    if isinstance(got, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in got)
    if isinstance(got, (set, frozenset)):
        return all(type(x) in _SCALARS for x in got) and got == want
    return type(got) in _SCALARS and got == want
_BLOCKED = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "socket.__new__",
            "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
            "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata"}
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
                "os.truncate", "os.link", "os.symlink", "os.utime", "shutil.rmtree",
                "os.chdir", "os.chroot"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _inside(path):
    if isinstance(path, int):
        return True
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    real = os.path.realpath(os.path.join(_sandbox, str(path)))
    return real == _sandbox or real.startswith(_sandbox + os.sep)
def _guard(event, args):
    # Raised for C-level calls too (posix.fork, _socket, os.open), unlike the patches above.
    if event in _BLOCKED:
        raise PermissionError(f"{event} is not allowed in the foundry-eval sandbox")
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writing and not _inside(path):
            raise PermissionError("writing outside the sandbox directory is not allowed")
    elif event in _PATH_EVENTS:
        paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
        if not all(_inside(os.fspath(a)) for a in paths):
            raise PermissionError(f"{event} outside the sandbox directory is not allowed")
sys.addaudithook(_guard)
results = []
mod = types.ModuleType("candidate")
try:
    exec(compile(cfg["code"], "<candidate>", "exec"), mod.__dict__)
    fn = mod.__dict__[cfg["entry_point"]]
    compiled = True
except BaseException:
    compiled = False
for test_input, test_output in zip(cfg["inputs"], cfg["outputs"]):
    if not compiled:
        results.append(False)
        continue
    try:
        got = fn(*eval(test_input))
        try:
            want = eval(test_output)
        except BaseException:
            want = test_output
        results.append(bool(_same(got, want)))
    except BaseException:
        results.append(False)
_out.write("\n@@FOUNDRY_RESULT:" + _nonce + "@@" + _dumps({"results": results, "isolated": isolated}) + "\n")
_out.flush()
os._exit(0)
"""


def run_python_tests(
    code: str,
    entry_point: str,
    test_inputs: list[str],
    test_outputs: list[str],
    limits: SandboxLimits | None = None,
) -> list[bool]:
    """Run ``entry_point(*eval(input)) == eval(output)`` for each test case inside the sandbox.

    Returns one bool per test case; all False when the code fails to compile, crashes, or times out.
    """
    limits = limits or SandboxLimits()
    nonce = secrets.token_hex(16)  # a result line without it was printed by the candidate
    payload = json.dumps(
        {
            "nonce": nonce,
            "code": code,
            "entry_point": entry_point,
            "inputs": test_inputs,
            "outputs": test_outputs,
            "limits": {
                "cpu_s": limits.cpu_s,
                "memory_bytes": limits.memory_bytes,
                "max_file_bytes": limits.max_file_bytes,
                "max_processes": limits.max_processes,
            },
        }
    )
    failed = [False] * len(test_inputs)
    with tempfile.TemporaryDirectory(prefix="foundry-eval-sandbox-") as cwd:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": cwd, "TMPDIR": cwd}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HARNESS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        try:
            stdout, _ = proc.communicate(payload.encode(), timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return failed
        marker = f"@@FOUNDRY_RESULT:{nonce}@@".encode()
        if marker not in stdout:
            return failed
        data = json.loads(stdout.rsplit(marker, 1)[1].decode())
        results = [bool(x) for x in data["results"]]
        return results if len(results) == len(test_inputs) else failed


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
