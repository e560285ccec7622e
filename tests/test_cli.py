"""The command line: config errors, and a headless server stopped by a signal."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import psutil
import pytest

from tests.serving import config_text

PYTHON = sys.executable


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "tui_passenger", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("text, expected", [
    ("[server\nport = 1\n", r"bad\.toml:1:\d+: TOML syntax error"),
    ("[server]\nprot = 1\n", r"bad\.toml:2: \[server\]: unknown key 'prot' .*did you mean 'port'"),
    ('[[app]]\nname = "a"\nroot = "."\nentry = "m:app"\nspawn_method = "fast"\n',
     r'bad\.toml:5: \[\[app\]\] #1 \("a"\): spawn_method: must be "smart" or "direct"'),
])
def test_config_errors_name_file_line_and_key(tmp_path, text, expected):
    (tmp_path / "bad.toml").write_text(text)
    result = run_cli("-c", str(tmp_path / "bad.toml"), "--headless")
    assert result.returncode == 2
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = run_cli("-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "nope.toml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_headless_drains_and_exits_cleanly_on_signal(tmp_path, sig):
    config = tmp_path / "passenger.toml"
    config.write_text(config_text({}, [{"name": "app", "min_instances": 2,
                                        "max_instances": 2}]))
    proc = subprocess.Popen([PYTHON, "-m", "tui_passenger", "--headless", "-c", str(config)],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
            if port and len(re.findall(r"worker \d+ spawned", "".join(lines))) == 2:
                break
        assert port, "".join(lines)
        ours = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(ours) >= 3  # preloader + 2 workers
        result = {}

        def slow_request() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow?1.0", timeout=20) as r:
                result["reply"] = (r.status, json.loads(r.read()))

        client = threading.Thread(target=slow_request)
        client.start()
        for line in proc.stderr:  # the worker prints when the request is in
            lines.append(line)
            if "slow request started" in line:
                break
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
        client.join(20)
        assert proc.returncode == 0, "".join(lines) + rest
        assert result["reply"][0] == 200 and result["reply"][1]["slept"]
        assert not [pid for pid in ours if psutil.pid_exists(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
