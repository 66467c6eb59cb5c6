"""Make CASA (casatools/casatasks) start offline on the measures data in `casadata`.

casaconfig reads the site config named by CASASITECONFIG when casatools is first
imported, so `configure()` must run before that import; `casatools()` does both.
"""

import os
import warnings
from pathlib import Path

SITE_CONFIG = Path(__file__).parent / "data" / "casasiteconfig.py"


def configure():
    """Point casaconfig at the package's offline site config (unless the user set one)."""
    os.environ.setdefault("CASASITECONFIG", str(SITE_CONFIG))
    warnings.filterwarnings("ignore", category=SyntaxWarning, module="casatasks")


def casatools():
    """Import and return the casatools module, configured to run offline."""
    configure()
    import casatools as ct

    return ct


def casatasks():
    """Import and return the casatasks module, configured to run offline."""
    configure()
    import casatasks as cta

    return cta


def check_casa():
    """Fail loudly if CASA cannot start offline (used by scripts/setup.sh)."""
    ct = casatools()
    me = ct.measures()
    epoch = me.epoch("utc", "2026/01/01/00:00:00")
    if epoch["m0"]["value"] <= 0:
        raise RuntimeError("CASA measures did not load")
    print(f"CASA {ct.version_string()} runs offline with measures in {ct.ctsys.rundata()}")
