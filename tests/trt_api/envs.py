"""Per-version environments of the real TensorRT Python bindings, importable without a GPU.

Each environment is a folder ``<cache>/<version>/`` (cache: $EDGESEG_TRT_API_CACHE, default
~/.cache/edgeseg/trt-api) holding:

- ``site/``: the bindings wheel unpacked (``pip install --no-deps --target``), plus a two-line
  ``tensorrt`` package that makes ``import tensorrt`` the bindings module, as the full ``tensorrt``
  wheel does (the ``tensorrt-*-bindings`` wheels install ``tensorrt_bindings``; 8.5's full wheel is
  ``tensorrt`` itself);
- ``lib/``: a stub library, built with gcc, that defines every symbol the bindings' .so imports
  from TensorRT's native libraries (``nm -D --undefined-only`` minus what libc, libstdc++ and the
  interpreter provide), saved under each soname it needs (``readelf -d``: libnvinfer.so.10, ...).
  Every factory returns NULL: classes, methods, enums and pybind11 signatures can be read; nothing
  can be built or run;
- ``ready``: written last, so an interrupted build is redone.

Polygraphy releases are pure Python and shared by all versions: ``<cache>/polygraphy/<version>/``.

Run as a script (what .ci/run does): ``python tests/trt_api/envs.py [--slow]`` builds what is
missing and prints one line per environment. Exit 0 also when the registry is unreachable: the
suite then skips with that reason.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

# The TensorRT releases the product supports, as the suite checks them.
TENSORRT = {
    "8.6.1": "tensorrt-bindings==8.6.1",  # JetPack 6.0 is 8.6.2, whose bindings are not on PyPI
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",  # JetPack 6.1 / 6.2
    "10.16.1.11": "tensorrt-cu12-bindings==10.16.1.11",  # newest 10.x
    "11.0.0.114": "tensorrt-cu12-bindings==11.0.0.114",
    "11.4.0.106": "tensorrt-cu12-bindings==11.4.0.106",
}
# JetPack 5's 8.5 exists only as the full wheel (~550 MB, cp38/cp310): opt-in (EDGESEG_TRT_API_SLOW=1).
SLOW = {"8.5.3.1": "tensorrt==8.5.3.1"}
SLOW_PYTHON = "3.8"
# Every polygraphy release on PyPI from 0.48 on: the floor is proven against its neighbours.
POLYGRAPHY = ("0.48.1", "0.49.0", "0.49.9", "0.49.26", "0.50.3", "0.53.4", "0.53.6")
SYSTEM_LIBRARIES = ("libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libdl.so.2", "libpthread.so.0")


@dataclass(frozen=True)
class Environment:
    version: str
    root: Path
    python: str  # interpreter the bindings are built for

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    def env(self, extra_path: Sequence[Path] = ()) -> Dict[str, str]:
        """Process environment that imports these bindings (and `extra_path`, e.g. a polygraphy)."""
        env = dict(os.environ)
        paths = [str(self.site)] + [str(p) for p in extra_path]
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(self.lib)] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
        env["PYTHONNOUSERSITE"] = "1"
        return env


class Unavailable(Exception):
    """The registry (or a tool) is not reachable: the suite skips with this reason."""


def python(version: str) -> Optional[str]:
    """An interpreter of Python `version` that runs ($EDGESEG_TRT_API_PY38, pyenv's, then PATH's;
    a pyenv shim for a version that is not selected exists but fails)."""
    candidates = [os.environ.get("EDGESEG_TRT_API_PY38", "")]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"))
    candidates += [shutil.which(f"python{version}") or ""]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "import pip"], capture_output=True).returncode == 0:
            return candidate
    return None


def cache_root() -> Path:
    return Path(os.environ.get("EDGESEG_TRT_API_CACHE", Path.home() / ".cache" / "edgeseg" / "trt-api"))


def _pip(python: str, *args: str) -> None:
    command = [python, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()
        raise Unavailable(f"pip {' '.join(args[:1])} failed: {tail[-1] if tail else result.returncode}")


def _extension(site: Path) -> Path:
    found = sorted(site.glob("tensorrt*/tensorrt*.so"))
    if not found:
        raise Unavailable(f"no TensorRT extension module in {site}")
    return found[0]


def _needed(extension: Path) -> List[str]:
    out = subprocess.run(["readelf", "-d", str(extension)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def _imported_symbols(extension: Path, system: Sequence[str]) -> List[str]:
    """Undefined, non-weak symbols no system library (nor the interpreter) defines: TensorRT's."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(extension)], capture_output=True, text=True, check=True).stdout
    libraries = [ctypes.CDLL(None)] + [ctypes.CDLL(name) for name in system]
    symbols = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[-2] != "U":  # "w" (weak) needs no definition
            continue
        name = parts[-1]
        bare = name.split("@")[0]
        if not any(hasattr(lib, bare) for lib in libraries):
            symbols.append(bare)
    return sorted(set(symbols))


def build_stub(extension: Path, lib: Path) -> List[str]:
    """Compile the NULL-returning stub for `extension` into `lib` under each TensorRT soname."""
    needed = _needed(extension)
    system = [n for n in needed if n in SYSTEM_LIBRARIES or n.startswith("ld-linux")]
    ours = [n for n in needed if n not in system]
    symbols = _imported_symbols(extension, [n for n in system if not n.startswith("ld-linux")])
    lib.mkdir(parents=True, exist_ok=True)
    source = lib / "stub.c"
    # Mangled C++ names (libnvparsers' nvuffparser::...) are valid C identifiers; all are functions.
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in symbols))
    first = lib / ours[0]
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(first), str(source)], check=True, capture_output=True)
    for soname in ours[1:]:
        shutil.copyfile(first, lib / soname)
    return ours


def _shim(site: Path) -> None:
    """`import tensorrt` -> the bindings module (its __version__, classes and enums)."""
    if (site / "tensorrt").exists():
        return  # the full wheel (8.5) is the tensorrt package itself
    (site / "tensorrt").mkdir()
    (site / "tensorrt" / "__init__.py").write_text("import sys\nimport tensorrt_bindings\n\nsys.modules[__name__] = tensorrt_bindings\n")


def ensure(version: str) -> Environment:
    """The environment for TensorRT `version`, built when missing (raises Unavailable)."""
    specs = {**TENSORRT, **SLOW}
    interpreter = python(SLOW_PYTHON) if version in SLOW else sys.executable
    if interpreter is None:
        raise Unavailable(f"Python {SLOW_PYTHON} with pip is not installed (TensorRT {version} wheels exist for it only)")
    root = cache_root() / version
    environment = Environment(version, root, interpreter)
    if (root / "ready").is_file():
        return environment
    if shutil.which("gcc") is None or shutil.which("readelf") is None:
        raise Unavailable("gcc and readelf (binutils) are needed to build the stub libraries")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _pip(interpreter, "install", "--no-deps", "--no-compile", "--only-binary=:all:", "--target", str(environment.site), specs[version])
    _shim(environment.site)
    build_stub(_extension(environment.site), environment.lib)
    probe = subprocess.run(
        [interpreter, "-c", "import tensorrt; print(tensorrt.__version__)"], env=environment.env(), capture_output=True, text=True
    )
    if probe.returncode != 0 or not probe.stdout.strip().startswith(version.split(".post")[0][:3]):
        raise Unavailable(f"TensorRT {version} bindings do not import on the stub: {probe.stderr.strip()[-300:]}")
    (root / "ready").write_text(probe.stdout)
    return environment


def polygraphy(version: str) -> Path:
    """A folder to put on PYTHONPATH for polygraphy `version` (pure Python)."""
    target = cache_root() / "polygraphy" / version
    if not (target / "ready").is_file():
        shutil.rmtree(target, ignore_errors=True)
        _pip(sys.executable, "install", "--no-deps", "--no-compile", "--target", str(target / "site"), f"polygraphy=={version}")
        (target / "ready").write_text(version)
    return target / "site"


def pycuda_sources(version: str = "2026.1") -> Path:
    """pycuda's sdist unpacked (its names are read from the sources: it cannot be built here)."""
    target = cache_root() / "pycuda" / version
    if not (target / "ready").is_file():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with tempfile.TemporaryDirectory() as download:
            _pip(sys.executable, "download", "--no-deps", "--no-binary=:all:", "--no-build-isolation", "-d", download, f"pycuda=={version}")
            archive = next(Path(download).glob("pycuda-*.tar.gz"))
            shutil.unpack_archive(str(archive), str(target))
        (target / "ready").write_text(version)
    return next(p for p in target.iterdir() if p.is_dir())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    versions = list(TENSORRT) + (list(SLOW) if "--slow" in args or os.environ.get("EDGESEG_TRT_API_SLOW") == "1" else [])
    try:
        for version in versions:
            print(f"tensorrt {version}: {ensure(version).root}")
        for version in POLYGRAPHY:
            print(f"polygraphy {version}: {polygraphy(version)}")
        print(f"pycuda sources: {pycuda_sources()}")
    except Unavailable as exc:
        print(f"TensorRT API environments unavailable: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
