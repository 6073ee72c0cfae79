# Runs one script the way `python SCRIPT ARGS...` would, inside the WASI reactor.
#
# loop-runner hands this file to the reactor's `turn` export, prefixed by one line that binds
# `_LOOP_RUNNER` to the hex of a JSON object: {"workdir", "script", "argv", "env"}. A `turn` runs
# in an interpreter that may come from a snapshot, so everything a fresh `python SCRIPT` would
# take from the process (arguments, environment, working directory, random state) is set here.
def _loop_runner_main(config_hex):
    import json
    import os
    import runpy
    import sys
    import traceback

    config = json.loads(bytes.fromhex(config_hex).decode("utf-8"))
    script = config["script"]
    os.environ.clear()
    os.environ.update(config["env"])
    sys.argv[:] = [script, *config["argv"]]
    os.chdir(config["workdir"])
    sys.path.insert(0, os.path.dirname(script))
    # A snapshot carries the random state of the moment it was taken. Draw fresh state from
    # the guest's (seeded) random source, as a freshly started interpreter does.
    if "random" in sys.modules:
        sys.modules["random"].seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(int.from_bytes(os.urandom(4), "little"))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:
        # Show the traceback from the script's own frames, as `python SCRIPT` does.
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb if tb is not None else e.__traceback__)
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code & 0xFF)


_loop_runner_main(_LOOP_RUNNER)
