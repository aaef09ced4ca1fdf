"""Attacks on foundry-eval's code-execution sandbox: each must be stopped and scored as a failure.

Every candidate below would make its test case *pass* if the attack worked (it returns True and
the expected output is True), so a sandbox that lets an attack through shows up as a passing
sample. Besides the score, the test checks the attack's effect directly: no connection arrived,
no file appeared, no process outside was signalled.

Already covered by foundry-eval's own tests/test_sandbox.py (cited in RELIABILITY.md): infinite
loop (wall-clock kill), 4 GiB allocation (address-space limit), ``socket`` and ``subprocess``
through their Python modules, and the temp working directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from foundry_eval.sandbox import SandboxLimits, run_python_tests

LIMITS = SandboxLimits(timeout_s=8.0, cpu_s=4)


def _user_namespaces() -> bool:
    """Whether this host lets an unprivileged process make a network namespace."""
    tool = shutil.which("unshare")
    if tool is None:
        return False
    try:
        return (
            subprocess.run([tool, "-rn", "true"], capture_output=True, timeout=20).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _score(code: str) -> list[bool]:
    return run_python_tests(code, "f", ["()"], ["True"], LIMITS)


def test_network_through_the_low_level_socket_module_is_blocked() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = (
            "import _socket\n"
            "def f():\n"
            "    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
            "    s.settimeout(3)\n"
            f"    s.connect(('127.0.0.1', {port}))\n"
            "    s.send(b'exfiltrated')\n"
            "    return True\n"
        )
        assert _score(code) == [False]
        with pytest.raises(TimeoutError):
            server.accept()


def test_writing_outside_the_sandbox_temp_dir_is_blocked(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    code = (
        "import os\n"
        "def f():\n"
        f"    fd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "    os.write(fd, b'escaped')\n"
        "    os.close(fd)\n"
        "    return True\n"
    )
    assert _score(code) == [False]
    assert not target.exists()


def test_fork_bomb_is_stopped() -> None:
    # A bounded fork bomb (16 forks, each child exits at once), so a sandbox that fails this test
    # cannot take the machine down; the candidate passes only if it could create a process.
    code = (
        "import posix\n"
        "def f():\n"
        "    made = 0\n"
        "    for _ in range(16):\n"
        "        try:\n"
        "            pid = posix.fork()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if pid == 0:\n"
        "            posix._exit(0)\n"
        "        made += 1\n"
        "        posix.waitpid(pid, 0)\n"
        "    return made > 0\n"
    )
    assert _score(code) == [False]


def test_signalling_a_process_outside_the_sandbox_is_blocked() -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        code = f"import posix\ndef f():\n    posix.kill({victim.pid}, 9)\n    return True\n"
        assert _score(code) == [False]
        time.sleep(0.2)
        assert victim.poll() is None, "the sandboxed code killed a process outside the sandbox"
    finally:
        victim.kill()
        victim.wait()


def test_candidate_cannot_report_its_own_success() -> None:
    forged = (
        "import sys, posix\n"
        "def f():\n"
        '    sys.__stdout__.write(\'\\n@@FOUNDRY_RESULT@@{"results": [true], "isolated": true}\\n\')\n'
        "    sys.__stdout__.flush()\n"
        "    posix._exit(0)\n"
    )
    always_equal = (
        "class A:\n    def __eq__(self, other):\n        return True\ndef f():\n    return A()\n"
    )
    assert run_python_tests(forged, "f", ["()"], ["42"], LIMITS) == [False]
    assert run_python_tests(always_equal, "f", ["()"], ["42"], LIMITS) == [False]


def test_sleeping_and_signal_ignoring_candidates_are_killed_on_time() -> None:
    # Beyond the busy loop of foundry-eval's test: a candidate that ignores SIGTERM and sleeps
    # (no CPU time, so RLIMIT_CPU never fires) is still killed by the wall-clock limit.
    code = (
        "import signal, time\n"
        "def f():\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    time.sleep(600)\n"
        "    return True\n"
    )
    start = time.monotonic()
    assert run_python_tests(code, "f", ["()"], ["True"], SandboxLimits(timeout_s=2.0)) == [False]
    assert time.monotonic() - start < 20
