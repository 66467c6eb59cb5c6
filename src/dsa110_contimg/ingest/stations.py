"""The DSA-110 station table: the 117 pads, their positions and which are correlated.

`data/stations.csv` lists each station (name DSA-NNN, station number = the antenna name
in the raw files, antenna number = station - 1), its WGS84 latitude, longitude and
height, its ITRF x, y, z (m), and whether it was correlated in January 2026
(`active_2026_01_25`: 96 of 117). The raw files' own antenna positions are not trusted;
the converter takes positions from this table.
"""

from functools import lru_cache
from importlib.resources import files

import numpy as np
import pandas as pd

N_STATIONS = 117
ACTIVE_COLUMN = "active_2026_01_25"


@lru_cache(maxsize=1)
def _table():
    with files("dsa110_contimg").joinpath("data/stations.csv").open() as fh:
        table = pd.read_csv(fh)
    if len(table) != N_STATIONS or not np.array_equal(table.station, np.arange(1, N_STATIONS + 1)):
        raise ValueError("data/stations.csv: expected stations 1..117 in order")
    return table


def load_stations():
    """The station table (a copy), one row per station 1..117 in order."""
    return _table().copy()


def itrf_positions():
    """ITRF x, y, z (m) of stations 1..117, shape (117, 3); row k is antenna number k."""
    return _table()[["itrf_x_m", "itrf_y_m", "itrf_z_m"]].to_numpy(float)


def active_stations():
    """Station numbers correlated in January 2026 (96), ascending."""
    table = _table()
    return table.station[table[ACTIVE_COLUMN] == 1].to_numpy(int)


def select_stations(n_antennas):
    """`n_antennas` correlated station numbers spread evenly over the active list
    (ordered by station number: east-west arm, north-south arm, then outriggers), so
    a small test array keeps a few long baselines; all 96 when n_antennas = 96."""
    active = active_stations()
    if not 2 <= n_antennas <= active.size:
        raise ValueError(
            f"n_antennas must be 2..{active.size} (the active stations), not {n_antennas}"
        )
    index = np.round(np.linspace(0, active.size - 1, n_antennas)).astype(int)
    return active[np.unique(index)]
