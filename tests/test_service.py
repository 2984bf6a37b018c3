"""`edgeseg run` as a systemd service: the unit `edgeseg service` writes, and the run itself
under systemd's environment (NOTIFY_SOCKET, WATCHDOG_USEC) with --metrics, stopped by SIGTERM."""
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edge_media import frames, write_video
from edgeseg.cli import app
from edgeseg.files import sha256
from edgeseg.service import systemd_unit
from test_line_health import _Listener, get, scrape, value, wait_for

RUN_ARGS = ["--source", "rtsp://cam/line 1", "--jsonl", "out%d$HOME.jsonl", "--metrics", "9108"]


def _exec_start(unit: str):
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    # systemd's quoting of these words is the shell's, once its own %% and $$ are undone
    return shlex.split(line[len("ExecStart="):].replace("%%", "%").replace("$$", "$"))


def test_unit_is_a_notify_service_with_a_watchdog_running_these_options(tmp_path):
    result = CliRunner().invoke(app, ["service", "unit", "--watchdog", "20", "--", *RUN_ARGS])
    assert result.exit_code == 0, result.output
    unit = result.stdout
    assert "Type=notify" in unit and "WatchdogSec=20" in unit and "Restart=on-failure" in unit and "KillSignal=SIGTERM" in unit
    words = _exec_start(unit)
    assert os.path.isabs(words[0]) and os.access(words[0], os.X_OK) and words[1:] == ["run", *RUN_ARGS]
    assert f"WorkingDirectory={os.getcwd()}" in unit
    if shutil.which("systemd-analyze"):
        path = tmp_path / "edgeseg-test.service"
        path.write_text(unit)
        check = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "edgeseg-test.service" not in check.stderr, check.stderr


def test_install_writes_a_user_unit_and_says_how_to_start_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["service", "install", "--user", "--name", "edgeseg-line1", "--", *RUN_ARGS])
    assert result.exit_code == 0, result.output
    path = tmp_path / ".config/systemd/user/edgeseg-line1.service"
    assert path.read_text() == systemd_unit(RUN_ARGS, user_unit=True) and "WantedBy=default.target" in path.read_text()
    assert "systemctl --user daemon-reload && systemctl --user enable --now edgeseg-line1.service" in result.stderr


@pytest.mark.parametrize("args", [["unit", "--", "--show"], ["install", "--name", "a/b", "--user", "--", "--source", "x"]])
def test_what_cannot_run_as_a_service_is_a_usage_error(args, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["service", *args])
    assert result.exit_code == 2 and "error:" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_under_systemd_notifies_serves_metrics_and_stops_on_sigterm(tiny_models, tmp_path):
    clip = write_video(tmp_path / "clip.avi", frames(10))
    notify_path = str(tmp_path / "notify.sock")
    listener = _Listener(notify_path)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from edgeseg.cli import main; main()", "run", "--source", str(clip), "--loop", "--rate", "20"]
    command += ["--classifier", str(tiny_models["classifier"]), "--segmenter", str(tiny_models["segmenter"]), "--metrics", str(port), "--json"]
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")  # what systemd sets for WatchdogSec=1
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: process.poll() is not None or listener.times("READY=1"), what="READY=1")
        assert process.poll() is None, process.communicate()[1]
        wait_for(lambda: (value(scrape(url), "edgeseg_frames_total", camera="0") or 0) >= 10, what="frames")
        assert get(url + "/readyz") == (200, "ok\n") and get(url + "/healthz") == (200, "ok\n")
        samples = scrape(url)
        shas = {dict(labels)["role"]: dict(labels)["sha256"] for (name, labels) in samples if name == "edgeseg_model_info"}
        assert shas == {role: sha256(tiny_models[role]) for role in ("classifier", "segmenter")}
        assert value(samples, "edgeseg_stage_seconds_count", stage="classifier") >= 10
        ready = listener.times("READY=1")[0]
        wait_for(lambda: len([t for t in listener.times("WATCHDOG=1") if t > ready]) >= 2, timeout=10, what="watchdog pings")
        process.send_signal(signal.SIGTERM)  # systemd's stop
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["stopped_by"] == "stopped by SIGTERM" and report["outputs"]["metrics"] == url
    assert listener.times("STOPPING=1") and listener.times("STOPPING=1")[0] > ready
    assert f"metrics: {url}/metrics" in stderr
