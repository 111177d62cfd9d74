#!/usr/bin/env python3
"""Picks the corpus that scripts/fuzz commits for one fuzz target.

`cargo fuzz cmin` keeps every input that adds an edge anywhere in the binary, and most edges of
these targets are in the `http` and `base64` crates, so its result is hundreds of files per target.
What the corpus must keep is the coverage of Inlet's own code: this picks, greedily, the fewest
inputs that reach every basic block in a source file whose path contains one of SOURCE_PATH_PART
that any input reached, on top of what the
hand-written seeds (always replayed, never dropped) already reach.

usage: fuzz_select.py BINARY CONTROL_FILE SEEDS_DIR OUT_DIR SOURCE_PATH_PART...

CONTROL_FILE is written by the target run with `-merge=1 -set_cover_merge=1 -use_counters=0
-merge_control_file=...`: its `FT <input> <features>` lines then list every inline 8-bit counter
an input hit (numbered as `counter_of_feature` undoes), and counter i belongs to entry i of the
`__sancov_pcs` table.
"""

import os
import re
import shutil
import subprocess
import sys


def counter_of_feature(binary):
    """Maps a feature to its counter index. With -use_counters=0 libFuzzer numbers the counters
    of each page-aligned region of `__sancov_cntrs` from 8 × (offset of the region)."""
    sections = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    match = re.search(r"__sancov_cntrs\s+PROGBITS\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", sections)
    if not match:
        sys.exit(f"fuzz_select: no __sancov_cntrs section in {binary}")
    address, size = int(match.group(1), 16), int(match.group(2), 16)
    mapping = {}
    offset = 0
    while offset < size:
        end = min(size, (address + offset) // PAGE * PAGE + PAGE - address)
        for counter in range(offset, end):
            mapping[8 * offset + counter - offset] = counter
        offset = end
    return mapping


PAGE = 4096


def pc_table(binary):
    """Address of each instrumented basic block, by counter index (from the PIE relocations)."""
    sections = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    match = re.search(r"__sancov_pcs\s+PROGBITS\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", sections)
    if not match:
        sys.exit(f"fuzz_select: no __sancov_pcs section in {binary}")
    start, size = int(match.group(1), 16), int(match.group(2), 16)
    pcs = [None] * (size // 16)
    relocations = subprocess.run(["readelf", "-rW", binary], capture_output=True, text=True, check=True).stdout
    for line in relocations.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2].endswith("_RELATIVE"):
            offset = int(fields[0], 16)
            if start <= offset < start + size and (offset - start) % 16 == 0:
                pcs[(offset - start) // 16] = int(fields[3], 16)
    return pcs


def blocks_under(binary, pcs, prefixes):
    """Counter indices whose block's source file path contains one of `prefixes`."""
    indices = [i for i, pc in enumerate(pcs) if pc is not None]
    addresses = "".join(f"{pcs[i]:x}\n" for i in indices)
    lines = subprocess.run(["addr2line", "-e", binary], input=addresses, capture_output=True, text=True, check=True)
    return {i for i, location in zip(indices, lines.stdout.splitlines()) if any(p in location for p in prefixes)}


def main():
    binary, control, seeds, out = sys.argv[1:5]
    prefixes = sys.argv[5:]
    counters = counter_of_feature(binary)
    lines = open(control, encoding="utf-8", errors="replace").read().splitlines()
    count = int(lines[0])
    files = lines[2 : 2 + count]
    hits = {}
    for line in lines[2 + count :]:
        if line.startswith("FT "):
            fields = line.split()
            hits[int(fields[1])] = {counters[int(f)] for f in fields[2:] if int(f) in counters}

    ours = blocks_under(binary, pc_table(binary), prefixes)
    seeds = os.path.abspath(seeds) + os.sep
    covered = set()
    candidates = {}
    for index, features in hits.items():
        reached = features & ours
        if os.path.abspath(files[index]).startswith(seeds):
            covered |= reached
        else:
            candidates[index] = reached
    by_seeds = len(covered)
    wanted = set().union(covered, *candidates.values())

    chosen = []
    while covered != wanted:
        best = max(candidates, key=lambda i: (len(candidates[i] - covered), -os.path.getsize(files[i]), files[i]))
        chosen.append(best)
        covered |= candidates.pop(best)

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for index in chosen:
        shutil.copy(files[index], os.path.join(out, os.path.basename(files[index])))
    print(
        f"{len(chosen)} of {len(hits)} inputs keep the {len(wanted)} blocks reached in {' '.join(prefixes)}"
        f" ({by_seeds} by the seeds alone)"
    )


if __name__ == "__main__":
    main()
