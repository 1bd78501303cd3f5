#!/usr/bin/env python3
"""Helpers of scripts/cuda-device-check.sh, standard library only (the lent
GPU machines have Python; nothing may be installed there).

Agreement of two runs of the same pipeline on two devices:

    compare_runs.py AUGMENT RUN_A RUN_B STAGE [STAGE ...] [--json OUT]

For each train_generator STAGE: every `train_log` value (by phase, step,
name; read with `augment sql`) and every tensor of every `.safetensors` file
in the stage folder (read from the file format: an 8-byte header length, a
JSON header, raw little-endian data). Prints the largest differences and a
verdict: the first logged step of every phase within a relative 1e-3 (an
absolute 1e-5 below that), and the final weights within a relative L2
distance of 1e-2 (short runs: float rounding grows step by step but stays
far below that unless an op differs). Exit 1 when they do not agree.

Step timing from the stage wall times of two runs of SHORT and LONG steps:

    compare_runs.py --timing NAME BATCH SHORT LONG WALL_SHORT WALL_LONG PEAK_MIB OUT_JSON
"""

import csv
import io
import json
import math
import os
import struct
import subprocess
import sys

FIRST_STEP_REL = 1e-3
FIRST_STEP_ABS = 1e-5
WEIGHTS_REL_L2 = 1e-2


def train_log(augment, run, stage):
    query = f"SELECT phase, step, loss AS name, value FROM {stage}_train_log ORDER BY phase, step, loss"
    out = subprocess.run([augment, "sql", run, query, "--format", "csv"],
                         check=True, capture_output=True, text=True).stdout
    rows = {}
    for r in csv.DictReader(io.StringIO(out)):
        v = r["value"]
        rows[(r["phase"], int(r["step"]), r["name"])] = float(v) if v not in ("", "NaN") else math.nan
    return rows


def tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    formats = {"F32": "f", "F64": "d"}
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] not in formats:
            continue
        a, b = t["data_offsets"]
        fmt = formats[t["dtype"]]
        count = (b - a) // struct.calcsize(fmt)
        out[name] = struct.unpack(f"<{count}{fmt}", data[a:b])
    return out


def compare_stage(augment, run_a, run_b, stage):
    la, lb = train_log(augment, run_a, stage), train_log(augment, run_b, stage)
    first = {}
    for key in sorted(la):
        phase, step, _ = key
        if step >= 1 and (phase not in first or step < first[phase]):
            first[phase] = step
    losses, worst_first = [], 0.0
    ok = set(la) == set(lb)
    for key in sorted(set(la) & set(lb)):
        a, b = la[key], lb[key]
        diff = abs(a - b)
        rel = diff / max(abs(a), 1e-12)
        losses.append({"phase": key[0], "step": key[1], "name": key[2], "a": a, "b": b, "rel": rel})
        if key[1] == first.get(key[0]):
            worst_first = max(worst_first, rel)
            if not (diff <= FIRST_STEP_ABS or rel <= FIRST_STEP_REL):
                ok = False
    weights = []
    folder_a, folder_b = os.path.join(run_a, stage), os.path.join(run_b, stage)
    for f in sorted(os.listdir(folder_a)):
        if not f.endswith(".safetensors"):
            continue
        ta, tb = tensors(os.path.join(folder_a, f)), tensors(os.path.join(folder_b, f))
        num = den = max_abs = checksum_a = checksum_b = 0.0
        for name, va in ta.items():
            vb = tb.get(name)
            if vb is None or len(vb) != len(va):
                ok = False
                continue
            for x, y in zip(va, vb):
                num += (x - y) ** 2
                den += x * x
                max_abs = max(max_abs, abs(x - y))
                checksum_a += abs(x)
                checksum_b += abs(y)
        rel_l2 = math.sqrt(num) / max(math.sqrt(den), 1e-12)
        ok &= rel_l2 <= WEIGHTS_REL_L2 and set(ta) == set(tb)
        weights.append({"file": f, "tensors": len(ta), "rel_l2": rel_l2, "max_abs": max_abs,
                        "checksum_a": checksum_a, "checksum_b": checksum_b})
    last_rel = max((r["rel"] for r in losses if not math.isnan(r["rel"])), default=0.0)
    return {"stage": stage, "agree": ok, "log_values": len(losses),
            "worst_first_step_rel": worst_first, "worst_any_step_rel": last_rel,
            "weights": weights, "losses": losses}


def agreement(argv):
    out_json = None
    if "--json" in argv:
        i = argv.index("--json")
        out_json = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    augment, run_a, run_b, *stages = argv
    results = [compare_stage(augment, run_a, run_b, s) for s in stages]
    for r in results:
        print(f"   {r['stage']}: {r['log_values']} logged values; first step of each phase within "
              f"{r['worst_first_step_rel']:.2e} (relative), any step within {r['worst_any_step_rel']:.2e}; "
              f"{'AGREE' if r['agree'] else 'DISAGREE'}")
        for w in r["weights"]:
            print(f"      {w['file']}: {w['tensors']} tensors, relative L2 {w['rel_l2']:.2e}, "
                  f"max |diff| {w['max_abs']:.2e}, sum |w| {w['checksum_a']:.6g} vs {w['checksum_b']:.6g}")
    if out_json:
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(r["agree"] for r in results) else 1


def timing(argv):
    name, batch, short, long_, w_short, w_long, peak, path = argv
    batch, short, long_ = int(batch), int(short), int(long_)
    w_short, w_long = float(w_short), float(w_long)
    step = (w_long - w_short) / (long_ - short)
    ips = batch / step if step > 0 else float("nan")
    print(f"   {name}: batch {batch}, {step * 1000:.1f} ms/step, {ips:.1f} images/s, "
          f"peak GPU memory {peak} MiB")
    with open(path, "w") as f:
        json.dump({"run": name, "batch": batch, "steps": [short, long_], "stage_wall_s": [w_short, w_long],
                   "s_per_step": step, "images_per_s": ips, "peak_gpu_memory_mib": int(peak)}, f)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(timing(args[1:]) if args[:1] == ["--timing"] else agreement(args))
