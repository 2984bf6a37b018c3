"""Run a setup.py with its C++ sources compiled in parallel, one job per core.

setuptools compiles the sources of one extension one after another; pycuda's _driver extension is
~60 files (its Boost.Python subset), minutes on one core. This patches CCompiler.compile to hand
each object to a thread pool (the compiler runs as a subprocess, so threads suffice), then runs
setup.py with the given arguments:  python parallel_build.py build_ext --inplace
"""
import os
import runpy
import sys
from concurrent.futures import ThreadPoolExecutor

from setuptools._distutils import ccompiler


def _parallel_compile(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                      extra_preargs=None, extra_postargs=None, depends=None):
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

    def one(obj):
        source, extension = build[obj]
        self._compile(obj, source, extension, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(one, [obj for obj in objects if obj in build]))
    return objects


ccompiler.CCompiler.compile = _parallel_compile
sys.argv = ["setup.py", *sys.argv[1:]]
sys.path.insert(0, os.getcwd())  # setup.py imports its helpers (aksetup_helper) from its folder
runpy.run_path("setup.py", run_name="__main__")
