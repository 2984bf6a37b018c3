"""Real network services for the line-integration tests, started on 127.0.0.1 and stopped by them:
a Mosquitto broker (Debian `mosquitto`) and an RTSP server (GStreamer's gst-rtsp-server, driven
by Debian's python3-gi), each a separate process that a test can stop and start again on the
same port to stage an outage, and an OPC UA server (asyncua) on a thread of its own. CI installs
them (.ci/run); elsewhere a missing one skips. The benchmarks use them too."""
import asyncio
import getpass
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: the one python3-gi and GStreamer's typelibs serve
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")


def require(path: str, package: str, available: Optional[bool] = None) -> None:
    """Skip without the program `path` (or when `available` is False), except on CI, whose
    .ci/run installs `package`: there it fails."""
    if available is None:
        available = os.access(path, os.X_OK)
    if not available:
        message = f"{path} missing: apt-get install -y {package}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class _Service:
    """A process on a fixed port that can be stopped and started again."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self._process: Optional[subprocess.Popen] = None

    def command(self) -> List[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"{self.command()[0]} did not start: {self.log.read_text()[-2000:]}") from None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


class Mosquitto(_Service):
    """Mosquitto listening on 127.0.0.1 only, with persistence: a persistent session's
    subscriptions and queued QoS-1 messages survive a restart (SIGTERM saves the database).
    users: {name: password}: only they may connect (a password file made by mosquitto_passwd)."""

    def __init__(self, folder: Path, users: Optional[Dict[str, str]] = None) -> None:
        super().__init__(free_port(), folder / "mosquitto.log")
        self.config = folder / "mosquitto.conf"
        access = "allow_anonymous true\n"
        if users:
            require(MOSQUITTO_PASSWD, "mosquitto")
            passwords = folder / "mosquitto.passwd"
            for i, (name, password) in enumerate(users.items()):
                subprocess.run([MOSQUITTO_PASSWD, "-b", *(["-c"] if i == 0 else []), str(passwords), name, password], check=True)
            passwords.chmod(0o600)
            # as root Mosquitto would read it as its own user, which cannot enter a private tmp folder
            access = f"allow_anonymous false\npassword_file {passwords}\nuser {getpass.getuser()}\n"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n{access}"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def command(self) -> List[str]:
        return [MOSQUITTO, "-c", str(self.config)]


class RtspServer(_Service):
    """gst-rtsp-server on 127.0.0.1:port serving `clip` (MJPEG AVI, sent as RTP/JPEG in real
    time) at rtsp://127.0.0.1:port/x, to every client from its first frame."""

    def __init__(self, clip: Path, folder: Path) -> None:
        super().__init__(free_port(), folder / "rtsp.log")
        self.clip = clip
        self.url = f"rtsp://127.0.0.1:{self.port}/x"

    def command(self) -> List[str]:
        return [SYSTEM_PYTHON, str(RTSP_SERVER), str(self.port), str(self.clip)]


def mjpeg_clip(path: Path, seconds: float, fps: int = 25) -> Path:
    """A 320x64 MJPEG AVI made by ffmpeg for RtspServer: baseline JPEG with the standard Huffman
    tables and 4:2:0, the only kind RTP/JPEG (RFC 2435) carries."""
    require("/usr/bin/ffmpeg", "ffmpeg")
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x64:rate={fps}", "-t", str(seconds)]
    command += ["-c:v", "mjpeg", "-huffman", "default", "-pix_fmt", "yuvj420p", "-q:v", "8", str(path)]
    subprocess.run(command, check=True, timeout=120)
    return path


def rtsp_server(clip: Path, folder: Path) -> RtspServer:
    """A started RtspServer on `clip` (skips where gst-rtsp-server is missing)."""
    packages = "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good"
    require(f"{SYSTEM_PYTHON} with GstRtspServer", packages, available=rtsp_server_available())
    service = RtspServer(clip, folder)
    service.start()
    return service


def rtsp_server_available() -> bool:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


class OpcUaServer:
    """An asyncua Server at opc.tcp://127.0.0.1:port/line1/ with the object `edgeseg` holding the
    verdict variables of `classes` (edgeseg.edge.opcua.variables), typed as a PLC's data block
    would be: narrower integers than Python's, a Float probability. Runs on a thread of its own."""

    def __init__(self, classes: Sequence[str], port: Optional[int] = None) -> None:
        import asyncua

        from edgeseg.edge.opcua import variables

        self._asyncua = asyncua
        self.names = variables(classes)
        self.url = f"opc.tcp://127.0.0.1:{port or free_port()}/line1/"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nodes: Dict[str, Any] = {}
        self._call(self._start())

    def _call(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        ua = self._asyncua.ua
        types = {"defect": ua.VariantType.Boolean, "frame": ua.VariantType.UInt32, "source": ua.VariantType.String,
                 "captured_at": ua.VariantType.DateTime, "defect_probability": ua.VariantType.Float}
        self.server = self._asyncua.Server()
        await self.server.init()
        self.server.set_endpoint(self.url)
        ns = await self.server.register_namespace("urn:edgeseg:test-line")
        folder = await self.server.nodes.objects.add_object(ns, "edgeseg")
        for name in self.names:
            kind = types.get(name, ua.VariantType.Int32)
            initial = {ua.VariantType.DateTime: datetime(2000, 1, 1), ua.VariantType.String: ""}.get(kind, 0)
            node = await folder.add_variable(ns, name, ua.Variant(initial, kind))
            await node.set_writable()
            self.nodes[name] = node
        await self.server.start()

    def values(self) -> Dict[str, Any]:
        async def read() -> Dict[str, Any]:
            return {name: await node.read_value() for name, node in self.nodes.items()}

        return self._call(read())

    def stop(self) -> None:
        self._call(self.server.stop())

    def close(self) -> None:
        """Stop the server if it still runs, then its loop."""
        try:
            self.stop()
        except Exception:
            pass  # stopped already (a test's outage)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
