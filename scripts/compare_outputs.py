#!/usr/bin/env python3
"""Are two runs of the same pipeline the same outputs? (Standard library only.)

    compare_outputs.py AUGMENT RUN_A RUN_B

Used to check that a refactor changed no output: run the pipeline with the
same seed before and after, then compare. Every file under the two run
folders is compared by sha256, except the run's own bookkeeping
(`manifest.json`, `pipeline.toml`, `.stage.json`, `.lock`), whose
fingerprints change whenever a stage's config serializes differently. A
Parquet table whose bytes differ is compared by content instead: every
column and value in order (`augment sql ... --format csv`), image columns by
the sha256 of their bytes. Prints one line per difference and a verdict;
exit 1 when any content differs.
"""

import csv
import hashlib
import io
import os
import subprocess
import sys

SKIP = {"manifest.json", "pipeline.toml", ".stage.json", ".lock"}


def files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n in SKIP:
                continue
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def sql(augment, run, query):
    r = subprocess.run([augment, "sql", run, query, "--format", "csv"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{run}: {query}: {r.stderr.strip()}")
    return r.stdout


def content(augment, run, table):
    """The table's CSV, with image columns replaced by their bytes' sha256."""
    text = sql(augment, run, f"SELECT * FROM {table}")
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) < 2:
        return text
    images = [h for h, v in zip(rows[0], rows[1]) if v.startswith("{bytes:")]
    if not images:
        return text
    cols = ", ".join(
        f"encode(sha256(\"{h}\"['bytes']), 'hex') AS \"{h}\"" if h in images else f"\"{h}\""
        for h in rows[0])
    return sql(augment, run, f"SELECT {cols} FROM {table}")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    augment, a, b = sys.argv[1:]
    fa, fb = files(a), files(b)
    differ = 0
    same_bytes = same_content = 0
    for rel in sorted(set(fa) | set(fb)):
        if rel not in fa or rel not in fb:
            print(f"only in {'B' if rel not in fa else 'A'}: {rel}")
            differ += 1
            continue
        if fa[rel] == fb[rel]:
            same_bytes += 1
            continue
        parts = rel.split(os.sep)
        if rel.endswith(".parquet") and len(parts) == 2:
            table = f"{parts[0]}_{parts[1][:-len('.parquet')]}"
            if content(augment, a, table) == content(augment, b, table):
                same_content += 1
                print(f"same content, other bytes: {rel}")
                continue
        print(f"DIFFERS: {rel}")
        differ += 1
    print(f"{same_bytes} files byte-identical, {same_content} tables identical in content, "
          f"{differ} differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
