"""Training for a bag: the selected iteration's own scripts trained once per cross-validation fold.

Made by loop-runner, not by an agent. steps/bag.json lists, for each fold, the rows of
data/train.csv that fold held out. Member members/fold-F/ trains with its own train.py on every
other row, exactly the rows its cross-validation fold trained on; inference.py averages the
members' predictions (class probabilities for classification, values for regression), so each
training row informs all but one of them.

Run: python train.py   (reads data/train.csv and steps/bag.json, writes members/*/model/ and model/)
"""
import csv
import json
import os
import runpy
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

SPEC = os.path.join(HERE, "steps", "bag.json")
with open(SPEC) as f:
    spec = json.load(f)
with open(os.path.join(HERE, "data", "train.csv"), newline="") as f:
    rows = list(csv.reader(f))
header, records = rows[0], rows[1:]
for member, held in zip(spec["members"], spec["held_out"]):
    folder = os.path.join(HERE, "members", member["name"])
    data = os.path.join(folder, "data")
    os.makedirs(data, exist_ok=True)
    skip = set(held)
    with open(os.path.join(data, "train.csv"), "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(r for i, r in enumerate(records) if i not in skip)
    shutil.rmtree(os.path.join(folder, "model"), ignore_errors=True)
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(folder)
    sys.argv = ["train.py"]
    try:
        runpy.run_path("train.py", run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise RuntimeError(f"member {member['name']} failed (exit {e.code})") from e
    finally:
        os.chdir(cwd)
        sys.argv = argv
        shutil.rmtree(data, ignore_errors=True)
os.makedirs(os.path.join(HERE, "model"), exist_ok=True)
# The blend inference.py reads is the bag's own description (it ignores the rows held out).
shutil.copyfile(SPEC, os.path.join(HERE, "model", "ensemble.json"))
print(f"trained {len(spec['members'])} fold members")
