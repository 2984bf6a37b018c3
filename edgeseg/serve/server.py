"""Run a Triton Inference Server on an edgeseg model repository.

Which `tritonserver`: the one named (a stock install, e.g. /opt/tritonserver/bin/tritonserver),
else the one on PATH, else the one the `nvidia-pytriton` wheel ships (Triton 2.51 with only the
Python backend; install it with `pip install --no-deps nvidia-pytriton`, its numpy<2 pin is for
pytriton's own client code, which edgeseg does not use).

The Python backend's stub embeds libpython and takes its environment from the first `python3` on
PATH (its `pyvenv.cfg` and site-packages). pytriton's stubs link the system libpython (Debian's
3.11 for the 3.11 stub), so a `python3` of another build (pyenv's 3.11.7) mixes two standard
libraries and the stub dies at start (`'_thread.RLock' object has no attribute
'_recursion_count'`, pytriton issue #51). The stub's pybind11 also predates NumPy 2: a NumPy 2
array reaches the server as 0 bytes ("input byte size mismatch ... got 0"). So an explicit step,
`edgeseg serve --prepare` (`prepare_server_environment`), builds once a venv from the system interpreter the stub links (`/usr/bin/python3.11`) holding NumPy 1.x
and an OpenCV that supports it (SERVER_PACKAGES, the only packages it installs), and points it at
this environment's site-packages for the rest: the models inside the server import the same
ONNX Runtime and edgeseg (editable installs included) as `edgeseg run`. The venv and a backend
folder with the matching stub are cached under $XDG_CACHE_HOME/edgeseg/triton (default
~/.cache/edgeseg/triton), keyed by interpreter, environment and server; serving only uses them
(`server_environment`) and never installs anything.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from edgeseg.errors import EdgesegError
from edgeseg.files import PathLike

logger = logging.getLogger(__name__)
SYSTEM_PYTHON = Path("/usr/bin/python3.11")  # what pytriton's 3.11 stub links (Debian 12, Ubuntu 22.04/23.x)
SERVER_PACKAGES = ("numpy<2", "opencv-python-headless<4.11")
READY = "prepared"  # written last by prepare_server_environment
PYTRITON_ADVICE = "pip install --no-deps nvidia-pytriton (ships tritonserver with the Python backend), or pass --tritonserver"


@dataclass(frozen=True)
class TritonInstall:
    """A tritonserver binary and what it needs: its backends folder, extra library folder
    (pytriton keeps the server's shared libraries beside the package) and whether it brings its
    own Python-backend stub (a stock install does; pytriton keeps one per Python version apart)."""

    binary: Path
    backends: Path
    libraries: Optional[Path] = None
    stubs: Optional[Path] = None

    @property
    def has_onnxruntime(self) -> bool:
        return (self.backends / "onnxruntime").is_dir()

    @property
    def has_tensorrt(self) -> bool:
        return (self.backends / "tensorrt").is_dir()


def find_tritonserver(binary: Optional[PathLike] = None) -> TritonInstall:
    """The named binary, `tritonserver` on PATH, or nvidia-pytriton's; EdgesegError when none."""
    if binary is None:
        found = shutil.which("tritonserver")
        if found is None:
            return _pytriton_install()
        binary = found
    path = Path(binary).resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EdgesegError(f"tritonserver {binary} is not an executable file", hint=PYTRITON_ADVICE)
    return TritonInstall(binary=path, backends=path.parent.parent / "backends")


def _pytriton_install() -> TritonInstall:
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise EdgesegError("no Triton Inference Server found (no tritonserver on PATH, nvidia-pytriton not installed)", hint=PYTRITON_ADVICE)
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        raise EdgesegError(f"nvidia-pytriton is installed but has no {binary}", hint="reinstall it: pip install --no-deps --force-reinstall nvidia-pytriton")
    return TritonInstall(binary=binary, backends=root / "backends", libraries=root.parent.parent / "nvidia_pytriton.libs", stubs=root / "python_backend_stubs")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeseg" / "triton"


def server_environment(install: TritonInstall, python: PathLike = SYSTEM_PYTHON, cache: Optional[Path] = None) -> Dict[str, str]:
    """Environment variables for tritonserver: for pytriton, the stub's venv and backends folder
    that `prepare_server_environment` built (EdgesegError naming that step when it has not run).
    Nothing is installed here: serving never pip-installs."""
    env = dict(os.environ)
    if install.libraries is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(install.libraries), env.get("LD_LIBRARY_PATH", "")) if p)
    if install.stubs is None:
        return env  # a stock install: its stub and the server's Python are the operator's choice
    root = _stub_root(install, Path(python), cache)
    if not (root / READY).is_file():
        raise EdgesegError(
            f"the Triton server's Python environment for {install.binary} is not prepared (in {root})",
            hint="run `edgeseg serve --prepare` once (it builds a venv with " + " and ".join(SERVER_PACKAGES) + ")",
        )
    env["PATH"] = os.pathsep.join([str(root / "env" / "bin"), env.get("PATH", "")])
    env["EDGESEG_TRITON_BACKENDS"] = str(root / "backends")
    return env


def prepare_server_environment(install: TritonInstall, python: PathLike = SYSTEM_PYTHON, cache: Optional[Path] = None) -> Optional[Path]:
    """The explicit setup step (`edgeseg serve --prepare`): for pytriton, build the stub's venv
    (SERVER_PACKAGES installed with pip) and a backends folder with the stub of this Python
    version; nothing to do for a stock install (None). Returns the folder; a second call reuses it."""
    if install.stubs is None:
        return None
    root = _stub_root(install, Path(python), cache)
    if (root / READY).is_file():
        return root
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = install.stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise EdgesegError(f"nvidia-pytriton has no Python-backend stub for Python {version}", hint="run edgeseg from Python 3.8-3.13")
    venv = root / "env"
    if not (venv / "bin" / "python3").exists():
        _make_venv(Path(python), venv, version, _site_packages())
    python_backend = root / "backends" / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for item in (install.backends / "python").iterdir():
        _link(item, python_backend / item.name)
    _link(stub, python_backend / "triton_python_backend_stub")
    (root / READY).write_text(" ".join(SERVER_PACKAGES) + "\n")
    return root


def _site_packages() -> List[str]:
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()})


def _stub_root(install: TritonInstall, python: Path, cache: Optional[Path]) -> Path:
    """The cache folder of this interpreter, environment and server (checked: `python` exists)."""
    if not python.is_file():
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        raise EdgesegError(
            f"the Python-backend stub of nvidia-pytriton links the system libpython {version}, but {python} is missing",
            hint=f"install it (apt-get install python{version} python{version}-venv) or pass --server-python",
        )
    key = hashlib.sha256("\n".join([str(python.resolve()), sys.prefix, str(install.binary), *_site_packages()]).encode()).hexdigest()[:12]
    return (cache or cache_dir()) / key


def _make_venv(python: Path, venv: Path, version: str, site_packages: List[str]) -> None:
    probe = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != version:
        raise EdgesegError(
            f"{python} is Python {probe.stdout.strip() or '?'}, but this environment is Python {version}: the server's models "
            "import this environment's compiled packages, which need the same minor version",
            hint=f"run edgeseg from a Python {version} environment, or pass --server-python with a system python{version}",
        )
    staging = venv.with_name(venv.name + f".{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("building the Triton Python-backend environment once: %s with %s", venv, " ".join(SERVER_PACKAGES))
    steps = (
        ([str(python), "-m", "venv", str(staging)], f"apt-get install python{version}-venv"),
        ([str(staging / "bin" / "python3"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *SERVER_PACKAGES], "check the connection to the package index"),
    )
    for command, hint in steps:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise EdgesegError(f"cannot build the server's Python environment ({' '.join(command[:3])}...): {last}", hint=hint)
    target = Path(subprocess.run([str(staging / "bin" / "python3"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    # After the venv's own packages (NumPy 1.x wins); addsitedir also runs those folders' .pth
    # files, which editable installs need.
    lines = [f"import site; site.addsitedir({path!r})" for path in site_packages]
    (target / "edgeseg-client-env.pth").write_text("\n".join(lines) + "\n")
    try:
        staging.rename(venv)
    except OSError:  # another process built it meanwhile: use theirs
        shutil.rmtree(staging, ignore_errors=True)
        if not (venv / "bin" / "python3").exists():
            raise


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _dies_with_this_process() -> Optional[Callable[[], None]]:
    """A preexec_fn asking the kernel to send the child SIGTERM (tritonserver's graceful stop,
    which ends its Python stubs and removes their shared memory) when this process dies, however
    it dies, SIGKILL included. Linux only (None elsewhere). The signal follows the *thread* that
    started the child: start the server from one that lives as long as it should."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: nothing to load between fork and exec
    parent = os.getpid()

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return tie


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TritonServer:
    """tritonserver on `repository`, as a child process; a context manager.

    host: address both endpoints listen on (127.0.0.1 unless serving other machines).
    log: file the server's output goes to (its last lines are quoted when it fails to start).
    """

    def __init__(
        self,
        repository: PathLike,
        install: TritonInstall,
        env: Dict[str, str],
        host: str = "127.0.0.1",
        grpc_port: int = 8001,
        http_port: int = 8000,
        log: Optional[PathLike] = None,
    ) -> None:
        self.repository = Path(repository)
        self.install = install
        self.env = env
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.log = Path(log) if log is not None else self.repository.parent / f"{self.repository.name}.tritonserver.log"
        self.process: Optional["subprocess.Popen[bytes]"] = None
        # Unique per start: the Python backend names its shared-memory regions with this prefix,
        # and a killed server leaves them behind (kill() removes them).
        self._shm_prefix = ""

    @property
    def grpc_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"grpc://{host}:{self.grpc_port}"

    def command(self) -> List[str]:
        backends = self.env.get("EDGESEG_TRITON_BACKENDS", str(self.install.backends))
        return [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            "--allow-metrics=false",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]

    def start(self, timeout: float = 120.0) -> "TritonServer":
        """Start and wait until every model is ready; EdgesegError with the server's last log
        lines when it exits or is not ready within `timeout` seconds."""
        self._shm_prefix = f"edgeseg_{uuid.uuid4().hex[:12]}_"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_dies_with_this_process()
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgesegError(f"tritonserver exited with code {self.process.returncode} while loading {self.repository}: {self.last_log()}", hint=f"full log: {self.log}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise EdgesegError(f"tritonserver did not get ready within {timeout:.0f} s: {self.last_log()}", hint=f"full log: {self.log}")

    def ready(self) -> bool:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        try:
            with urllib.request.urlopen(f"http://{host}:{self.http_port}/v2/health/ready", timeout=1.0) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def last_log(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        errors = [line for line in text if line.startswith("E") or "error" in line.lower()]
        return " | ".join((errors or text)[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (Triton's graceful stop: in-flight requests finish), then SIGKILL. Whatever
        way the server ended (also on its own, a crash), no stub of it outlives this call, nor
        any of its shared-memory regions."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._end(process)

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (what a crash looks like to clients)."""
        process, self.process = self.process, None
        if process is not None:
            self._end(process)

    def _end(self, process: "subprocess.Popen[bytes]") -> None:
        """SIGKILL what is left of the server's process group (the server, stubs it left behind
        when it crashed) and remove the shared-memory regions a killed stub could not."""
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is its pid
        except ProcessLookupError:
            pass  # nothing left
        process.wait()
        self._remove_regions()

    def _remove_regions(self) -> None:
        """The stubs' shared-memory regions a killed server could not remove."""
        for region in Path("/dev/shm").glob(f"{self._shm_prefix}*") if self._shm_prefix else ():
            region.unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
