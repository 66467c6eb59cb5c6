"""The Earth orientation table cache: the same coordinates with and without it."""

import json
import os
import pickle
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
import numpy as np
from astropy.utils import iers
from dsa110_contimg import astrometry
fresh = sys.argv[1] == "fresh"
if fresh:
    iers.IERS_Auto.iers_table = iers.IERS_Auto.open()
mjd = np.array([61041.4, 61041.5, 61300.25])
ha, dec = astrometry.hadec_deg([128.5, 300.0, 10.0], [55.6, 54.0, 60.0], mjd)
ra0, dec0 = astrometry.meridian_phase_center(2461041.9, 54.57)
lst = astrometry.lst_rad(mjd + 2400000.5)
print(json.dumps({"ha": ha.tolist(), "dec": dec.tolist(), "centre": [ra0, dec0],
                  "lst": lst.tolist()}))
"""


def run(cache_home, mode="cached"):
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Coordinates with astropy's own parsing of the bundled tables (no cache read)."""
    return run(tmp_path_factory.mktemp("nocache"), "fresh")


def test_cached_table_gives_the_same_coordinates_to_the_bit(tmp_path, reference):
    first = run(tmp_path)
    caches = list((tmp_path / "dsa110-contimg").glob("iers-astropy*-data*.pickle"))
    assert len(caches) == 1
    from astropy.utils import iers

    with open(caches[0], "rb") as fh:
        assert isinstance(pickle.load(fh), iers.IERS_Auto)
    second = run(tmp_path)
    assert first == reference
    assert second == reference


def test_unreadable_cache_is_rebuilt(tmp_path, reference):
    from dsa110_contimg.astrometry import iers_cache_path

    path = tmp_path / "dsa110-contimg" / iers_cache_path().name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a pickle")
    assert run(tmp_path) == reference
    with open(path, "rb") as fh:
        assert len(pickle.load(fh)) > 10000
