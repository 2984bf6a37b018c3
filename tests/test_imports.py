"""The runtime install must not need torch: importing the package and the runtime loads none."""
import subprocess
import sys

import pytest

RUNTIME_MODULES = [
    "edgeseg",
    "edgeseg.cli",
    "edgeseg.edge",
    "edgeseg.edge.preprocess",
    "edgeseg.edge.rle",
    "edgeseg.edge.card",
    "edgeseg.edge.verify",
]


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_runtime_module_does_not_import_torch(module):
    code = f"import sys, {module}; heavy = [m for m in ('torch', 'tensorrt', 'pycuda') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"{module} pulled in {result.stdout.strip()} {result.stderr[-500:]}"


def test_help_works_without_heavy_imports():
    code = (
        "import sys\n"
        "from edgeseg.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_atomic_output_files_follow_umask(tmp_path):
    import os

    from edgeseg.files import atomic_output

    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


# A finder that sends this process SIGINT when the named module starts loading: Ctrl-C at a
# known point of `edgeseg`'s start-up, without guessing a delay. Python's own SIGINT handler is
# put in place first, as in a terminal: a suite started as a background job (`cmd &` in a
# script) hands its processes SIGINT ignored, and Python then installs none.
_INTERRUPT_AT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv = ["edgeseg", "info", "--json"]
from edgeseg.cli import main
main()
"""


@pytest.mark.parametrize("module", ["rich.console", "edgeseg.commands.run", "edgeseg.envinfo"])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(module):
    result = subprocess.run([sys.executable, "-c", _INTERRUPT_AT.format(module=module)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 1
