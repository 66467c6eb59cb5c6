# casaconfig site configuration used by dsa110-contimg: CASA runs fully offline
# on the measures data shipped in the `casadata` package.
import casadata

measurespath = casadata.datapath
measures_auto_update = False
data_auto_update = False
nologfile = True
logfile = "/dev/null"
skipnetworkcheck = True
