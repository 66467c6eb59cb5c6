"""dsa110-contimg: DSA-110 continuum imaging pipeline (UVH5 archive -> MS -> light curves)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsa110-contimg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
