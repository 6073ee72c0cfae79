# Runs a script the way `python SCRIPT ARGS...` would, from a chosen working directory.
# WASI has no inherited working directory, so loop-runner starts every guest as
#   python -c <this file> WORKDIR SCRIPT ARGS...
import os
import runpy
import sys

_workdir, _script = sys.argv[1], sys.argv[2]
del sys.argv[:2]
sys.argv[0] = _script
os.chdir(_workdir)
# The reactor's sys.path holds only the stdlib zip; like `python SCRIPT`, put the script's
# directory first.
sys.path.insert(0, os.path.dirname(_script))
runpy.run_path(_script, run_name="__main__")
