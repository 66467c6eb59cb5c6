"""Transient failures: exponential backoff inside a job, and a switch that makes a stage
fail once so tests (and operators) can watch Snakemake's retries recover.

Inside a job some operations fail for a moment and then work: a CASA table locked by
another process ("Permanent lock on table ... could not be acquired"), a file system that
answers EAGAIN/EBUSY. `with_backoff` retries such calls with delays
base, base*factor, base*factor^2, ... (capped), and re-raises anything else at once.

`DSA110_FAIL_ONCE=<stage>:<group>[,<stage>:<group>...]` (group may be `*`) makes the CLI
stage fail on its first attempt for that group: the failure leaves a marker file in
`DSA110_FAIL_ONCE_DIR` (default `.dsa110-fail-once/` in the working directory), and the
next attempt, seeing the marker, runs normally.
"""

import errno
import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)

TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EINTR, errno.ESTALE}
_LOCK_MESSAGE = re.compile(
    r"lock\b.*(could not be acquired|cannot be acquired)|"
    r"resource temporarily unavailable",
    re.IGNORECASE,
)

FAIL_ONCE_ENV = "DSA110_FAIL_ONCE"
FAIL_ONCE_DIR_ENV = "DSA110_FAIL_ONCE_DIR"


def is_transient(err):
    """True for errors worth retrying: CASA table-lock errors and EAGAIN-like OS errors."""
    if isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS:
        return True
    return isinstance(err, RuntimeError) and bool(_LOCK_MESSAGE.search(str(err)))


def backoff_delays(attempts, base_s=0.5, factor=2.0, max_s=30.0):
    """The waits between `attempts` tries: base_s * factor**k, capped at max_s."""
    return [min(base_s * factor**k, max_s) for k in range(max(attempts - 1, 0))]


def with_backoff(
    func,
    *args,
    attempts=6,
    base_s=0.5,
    factor=2.0,
    max_s=30.0,
    transient=is_transient,
    what=None,
    sleep=time.sleep,
    **kwargs,
):
    """Call func(*args, **kwargs); on a transient error wait and try again, up to
    `attempts` calls in all. The last error (or any non-transient one) is raised."""
    delays = backoff_delays(attempts, base_s, factor, max_s)
    what = what or getattr(func, "__name__", "operation")
    for k in range(attempts):
        try:
            return func(*args, **kwargs)
        except Exception as err:
            if not transient(err) or k == attempts - 1:
                if k:
                    log.error("%s failed after %d attempts: %s", what, k + 1, err)
                raise
            log.warning(
                "%s: transient error (%s); retry %d/%d in %.1f s",
                what,
                err,
                k + 1,
                attempts - 1,
                delays[k],
            )
            sleep(delays[k])
    raise AssertionError("unreachable")


def open_table(path, readonly=True, **kwargs):
    """A casacore table opened with a permanent lock, waiting with backoff while another
    process holds it. Use as a context manager (`with open_table(ms) as t:`)."""
    from casacore import tables

    return with_backoff(
        tables.table,
        str(path),
        readonly=readonly,
        ack=False,
        lockoptions="permanent",
        what=f"open {path}",
        **kwargs,
    )


class InjectedFailure(OSError):
    """The first attempt of a stage failing on purpose (DSA110_FAIL_ONCE)."""


def _requested(stage, group, spec):
    for item in filter(None, (s.strip() for s in spec.split(","))):
        want_stage, _, want_group = item.partition(":")
        if want_stage == stage and want_group in ("*", "", group):
            return True
    return False


def fail_once_if_requested(stage, group=None, environ=None):
    """Raise InjectedFailure the first time `stage` runs for `group` when DSA110_FAIL_ONCE
    asks for it; later attempts find the marker file and return."""
    environ = os.environ if environ is None else environ
    spec = environ.get(FAIL_ONCE_ENV, "")
    if not spec or not _requested(stage, group or "", spec):
        return
    marker_dir = Path(environ.get(FAIL_ONCE_DIR_ENV, ".dsa110-fail-once"))
    marker = marker_dir / f"{stage}.{group or 'all'}.failed"
    if marker.exists():
        log.info("%s %s: already failed once (%s); running normally", stage, group, marker)
        return
    marker_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{stage} {group} failed on purpose at {time.time():.3f}\n")
    raise InjectedFailure(
        f"injected transient failure of {stage} for group {group} "
        f"({FAIL_ONCE_ENV}); the next attempt will run normally"
    )
