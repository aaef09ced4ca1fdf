"""The code-execution sandbox: results, limits, no network, temp cwd."""

from __future__ import annotations

import os

from foundry_eval.sandbox import SandboxLimits, run_python_tests

FAST = SandboxLimits(timeout_s=3.0, cpu_s=2)


def test_correct_and_wrong_code():
    code = "def add(a, b):\n    return a + b\n"
    assert run_python_tests(code, "add", ["(1, 2)", "(2, 2)"], ["3", "5"], FAST) == [True, False]
    assert run_python_tests("def add(a, b) return", "add", ["(1, 2)"], ["3"], FAST) == [False]
    assert run_python_tests("def other():\n    pass\n", "add", ["(1, 2)"], ["3"], FAST) == [False]


def test_infinite_loop_is_stopped():
    code = "def f():\n    while True:\n        pass\n"
    assert run_python_tests(code, "f", ["()"], ["None"], FAST) == [False]


def test_no_network_no_subprocess_and_memory_cap():
    net = "import socket\ndef f():\n    s = socket.socket()\n    return 1\n"
    assert run_python_tests(net, "f", ["()"], ["1"], FAST) == [False]
    sub = "import subprocess\ndef f():\n    return subprocess.run(['true']).returncode\n"
    assert run_python_tests(sub, "f", ["()"], ["0"], FAST) == [False]
    mem = "def f():\n    x = bytearray(4 << 30)\n    return 1\n"
    assert run_python_tests(
        mem, "f", ["()"], ["1"], SandboxLimits(timeout_s=5, memory_bytes=512 << 20)
    ) == [False]


def test_runs_in_a_fresh_temp_dir(tmp_path):
    code = "import os\ndef f():\n    open('x.txt', 'w').write('hi')\n    return os.getcwd()\n"
    before = set(os.listdir(tmp_path))
    # The candidate's cwd is a temp dir of its own, not ours; the test compares it to ours.
    assert run_python_tests(code, "f", ["()"], [repr(os.getcwd())], FAST) == [False]
    assert set(os.listdir(tmp_path)) == before and not os.path.exists("x.txt")
