"""Training for a weighted ensemble of loop-runner iterations.

Made by loop-runner, not by an agent. It retrains every member: each member's own train.py runs
in its directory under members/, on this snapshot's data/train.csv. The members and weights in
steps/ensemble.json were chosen on the members' validation predictions and stay as they are;
they are copied to model/ensemble.json, which inference.py reads.

Run: python train.py   (reads data/train.csv and steps/ensemble.json, writes members/*/model/ and model/)
"""
import json
import os
import runpy
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

SPEC = os.path.join(HERE, "steps", "ensemble.json")
with open(SPEC) as f:
    spec = json.load(f)
for m in spec["members"]:
    member = os.path.join(HERE, "members", m["name"])
    data = os.path.join(member, "data")
    os.makedirs(data, exist_ok=True)
    shutil.copyfile(os.path.join(HERE, "data", "train.csv"), os.path.join(data, "train.csv"))
    shutil.rmtree(os.path.join(member, "model"), ignore_errors=True)
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(member)
    sys.argv = ["train.py"]
    try:
        runpy.run_path("train.py", run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise RuntimeError(f"member {m['name']} failed (exit {e.code})") from e
    finally:
        os.chdir(cwd)
        sys.argv = argv
        shutil.rmtree(data, ignore_errors=True)
os.makedirs(os.path.join(HERE, "model"), exist_ok=True)
shutil.copyfile(SPEC, os.path.join(HERE, "model", "ensemble.json"))
print(f"retrained {len(spec['members'])} members")
