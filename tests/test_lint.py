"""The repeated-code check that `make lint` runs (.ci/check_duplicates.py)."""

import importlib.util
import subprocess
import sys

from pipeline import REPO

CHECKER = REPO / ".ci" / "check_duplicates.py"

BLOCK = """\
    y = x + 1
    z = y * 2  # a comment is part of the line
    w = z - 3
    v = w / 4
    u = v**2
    t = u + y
"""


def _checker():
    spec = importlib.util.spec_from_file_location("check_duplicates", CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_six_repeated_lines_are_found_within_and_across_files(tmp_path):
    (tmp_path / "a.py").write_text(f"def f(x):\n{BLOCK}    return t\n\n\ndef g(x):\n{BLOCK}")
    (tmp_path / "b.smk").write_text(f"def h(x):\n\n{BLOCK}\n    return -t\n")
    found = _checker().find_repeats([tmp_path / "a.py", tmp_path / "b.smk"])
    assert len(found) == 1
    places, key = found[0]
    assert [(p.name, span) for p, span in places] == [
        ("a.py", [2, 7]),
        ("a.py", [12, 17]),
        ("b.smk", [3, 8]),
    ]
    assert key[0] == "y = x + 1"


def test_five_lines_docstrings_and_keywords_do_not_count(tmp_path):
    five = "".join(BLOCK.splitlines(keepends=True)[:5])
    doc = '    """One docstring\n    of several lines\n    """\n'
    (tmp_path / "a.py").write_text(f"def f(x):\n{doc}{five}    try:\n        pass\n")
    (tmp_path / "b.py").write_text(f"def g(x):\n{doc}{five}    try:\n        return 1\n")
    assert _checker().find_repeats([tmp_path / "a.py", tmp_path / "b.py"]) == []


def test_the_repository_has_no_repeated_block():
    dirs = ["src", "tests", "benchmarks", "scripts", ".ci", "Snakefile", "rules"]
    out = subprocess.run(
        [sys.executable, str(CHECKER), *dirs], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout
