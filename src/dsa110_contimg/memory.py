"""How a process's memory allocator treats large freed arrays."""


def keep_freed_memory():
    """Have glibc's malloc keep freed memory for reuse (no mmap below 1 GiB, no trim);
    processes forked afterwards inherit it.

    Large numpy arrays are otherwise mapped on allocation and returned to the system when
    freed, so the next array of the same size is faulted in afresh, page by page (on the
    development machine up to ~15 us per 4 kB page): system time was ~40% of the ESE
    fit's CPU, and convert's subbands (~150 MB each) and flagging arrays paid it again
    for every subband. Memory then stays at the largest peak. No-op without glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    mmap_threshold, trim_threshold = -3, -1  # mallopt parameters M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    libc.mallopt(mmap_threshold, 1 << 30)
    libc.mallopt(trim_threshold, 1 << 30)
