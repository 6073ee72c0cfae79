"""Inference for a weighted ensemble of loop-runner iterations.

Made by loop-runner, not by an agent: greedy ensemble selection with replacement over the
members' validation predictions chose the weights in model/ensemble.json. Each member's own
inference.py runs in its directory under members/, and their predictions are averaged with
those weights (class probabilities for classification, values for regression).

Run: python inference.py --input FEATURES.csv --output PREDICTIONS.csv
"""
import argparse
import json
import os
import runpy
import shutil
import sys
import tempfile

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))


def canonical(label):
    """One spelling per class label, as loop-runner compares them (3 and 3.0 are the same)."""
    text = str(label).strip()
    try:
        value = float(text)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
    except ValueError:
        pass
    return {"True": "true", "TRUE": "true", "False": "false", "FALSE": "false"}.get(text, text)


def run_member(name, features, output):
    """Runs members/NAME/inference.py from its own directory, as it ran when it was scored."""
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(os.path.join(HERE, "members", name))
    sys.argv = ["inference.py", "--input", features, "--output", output]
    try:
        runpy.run_path("inference.py", run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise RuntimeError(f"member {name} failed (exit {e.code})") from e
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return pd.read_csv(output)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    with open(os.path.join(HERE, "model", "ensemble.json")) as f:
        spec = json.load(f)
    features = os.path.abspath(args.input)
    # Beside the output, which the caller made sure can be written (a sandbox may offer no
    # other writable place); removed again, so nothing is left in a snapshot.
    scratch = tempfile.mkdtemp(prefix=".members-", dir=os.path.dirname(os.path.abspath(args.output)))
    try:
        blend = combine(spec, features, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write(spec, blend, args.output)


def combine(spec, features, scratch):
    total = float(sum(m["weight"] for m in spec["members"]))
    blend = None
    for m in spec["members"]:
        out = run_member(m["name"], features, os.path.join(scratch, m["name"] + ".csv"))
        weight = m["weight"] / total
        if spec["kind"] == "regression":
            part = out["prediction"].astype(float).to_numpy() * weight
        else:
            columns = {canonical(c[len("proba_"):]): c for c in out.columns if c.startswith("proba_")}
            labels = [canonical(v) for v in out["prediction"]]
            part = pd.DataFrame(
                {
                    c: out[columns[c]].astype(float).to_numpy() if c in columns else [float(l == c) for l in labels]
                    for c in spec["classes"]
                }
            ).to_numpy() * weight
        blend = part if blend is None else blend + part
    return blend


def write(spec, blend, output):
    if spec["kind"] == "regression":
        result = pd.DataFrame({"prediction": blend})
    else:
        # The first class with the highest probability, as loop-runner breaks ties.
        result = pd.DataFrame({"prediction": [spec["classes"][i] for i in blend.argmax(axis=1)]})
        for i, c in enumerate(spec["classes"]):
            result["proba_" + c] = blend[:, i]
    result.to_csv(output, index=False)


main()
