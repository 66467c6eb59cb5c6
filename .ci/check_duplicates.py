"""Fail when a block of MIN_LINES or more code lines stands twice in the Python code or
the workflow (Snakefile, *.smk).

Lines are compared with white space folded; blank lines, comments, docstrings, import
lines, lone brackets and lone keywords (`try:`, `else:`, Snakemake's `params:`, ...) are
passed over (they repeat by nature).
Both repeats within one file and across files count.

    python .ci/check_duplicates.py DIR_OR_FILE ...
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

MIN_LINES = 6
SKIP = re.compile(r"^(#.*|import .*|from \S+ import .*|[\[\](){},:]+|\w+:|\"\"\"|''')?$")


def code_lines(path):
    """(line number, normalized text) of the lines that count, docstrings left out."""
    out, in_doc = [], False
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = " ".join(raw.split())
        quotes = line.count('"""') + line.count("'''")
        if in_doc:
            in_doc = quotes % 2 == 0
            continue
        if line.startswith(('"""', "'''", 'r"""')):
            in_doc = quotes % 2 == 1
            continue
        if not SKIP.match(line):
            out.append((n, line))
    return out


def find_repeats(paths):
    """Blocks of MIN_LINES counted lines that occur more than once: [(places, text)]."""
    seen = defaultdict(list)
    for path in paths:
        lines = code_lines(path)
        for i in range(len(lines) - MIN_LINES + 1):
            window = lines[i : i + MIN_LINES]
            key = tuple(t for _, t in window)
            seen[key].append((path, window[0][0], window[-1][0]))
    found, reported = [], defaultdict(list)
    for key, places in seen.items():
        if len(places) < 2:
            continue
        # a block longer than MIN_LINES is reported once: later windows extend it
        spans = [next((s for s in reported[p] if s[0] <= a <= s[1]), None) for p, a, _ in places]
        if all(spans):
            for span, (_, _, b) in zip(spans, places):
                span[1] = max(span[1], b)
            continue
        block = [(p, [a, b]) for p, a, b in places]
        for p, span in block:
            reported[p].append(span)
        found.append((block, key))
    return found


def main(argv):
    paths = []
    for arg in argv or ["."]:
        p = Path(arg)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.suffix in (".py", ".smk"))
        else:
            paths.append(p)
    found = find_repeats(paths)
    for places, key in found:
        where = " ~ ".join(f"{p}:{a}-{b}" for p, (a, b) in places)
        print(f"repeated block of {MIN_LINES}+ lines: {where}\n    {key[0]}")
    if found:
        print(f"{len(found)} repeated blocks: use one shared function")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
