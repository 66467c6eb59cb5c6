"""Numba kernels of the passes over a group's full-band visibilities (rows x channels x
polarizations) in convert and flagging, at module level so that numba's on-disk cache
(cache=True) is found by every later process: one pass each, where numpy needed several
full-size temporaries."""

import numba
import numpy as np


@numba.njit(cache=True)
def average_bins(data, flag, weight, factor, out_data, out_flag, out_weight):
    """Over the unflagged samples of each bin of `factor` adjacent channels,
    V = sum(w_i V_i) / sum(w_i) and W = sum(w_i) (accumulated in double precision); a
    bin without unflagged weight is flagged with V = 0, W = 0. Arrays are
    (rows, channels, polarizations); the outputs have channels / factor."""
    nrow, nchan, npol = data.shape
    for r in range(nrow):
        for c in range(nchan // factor):
            for p in range(npol):
                wsum = 0.0
                vre = 0.0
                vim = 0.0
                for k in range(c * factor, (c + 1) * factor):
                    if not flag[r, k, p]:
                        w = np.float64(weight[r, k, p])
                        wsum += w
                        vre += w * data[r, k, p].real
                        vim += w * data[r, k, p].imag
                if wsum > 0:
                    out_data[r, c, p] = complex(vre / wsum, vim / wsum)
                    out_flag[r, c, p] = False
                else:
                    out_data[r, c, p] = 0
                    out_flag[r, c, p] = True
                out_weight[r, c, p] = wsum


@numba.njit(cache=True)
def baseline_planes(data, flag, weight, tidx, bidx, bad, cube):
    """Bad samples (non-finite or zero data, flagged, weight <= 0) into `bad`, and into
    cube[baseline, time, channel] the mean over polarizations of the good samples (NaN
    where none is good). `weight` may be an empty array: no weights."""
    nrow, nchan, npol = data.shape
    has_weight = weight.size > 0
    for r in range(nrow):
        b, t = bidx[r], tidx[r]
        for c in range(nchan):
            total = 0j
            count = 0
            for p in range(npol):
                v = data[r, c, p]
                is_bad = flag[r, c, p] or not (np.isfinite(v.real) and np.isfinite(v.imag))
                is_bad = is_bad or (v.real == 0 and v.imag == 0)
                if has_weight:
                    is_bad = is_bad or not (weight[r, c, p] > 0)
                bad[r, c, p] = is_bad
                if not is_bad:
                    total += v
                    count += 1
            if count > 0:
                cube[b, t, c] = total / count
            else:
                cube[b, t, c] = complex(np.nan, np.nan)


@numba.njit(cache=True)
def broadcast_common(rfi, cube, baselines, fraction):
    """Flag on every baseline of `baselines` the (time, channel) cells, channels and
    times where RFI is in more than `fraction` of the samples with data (finite in
    `cube`) of those baselines. rfi and cube are (baseline, time, channel); rfi in
    place."""
    _, ntime, nchan = cube.shape
    seen = np.zeros((ntime, nchan), np.int64)
    have = np.zeros((ntime, nchan), np.int64)
    for b in baselines:
        for t in range(ntime):
            for c in range(nchan):
                if np.isfinite(cube[b, t, c].real):
                    have[t, c] += 1
                if rfi[b, t, c]:
                    seen[t, c] += 1
    common = np.zeros((ntime, nchan), np.bool_)
    seen_c, have_c = seen.sum(axis=0), have.sum(axis=0)
    seen_t, have_t = seen.sum(axis=1), have.sum(axis=1)
    for t in range(ntime):
        for c in range(nchan):
            common[t, c] = (
                seen[t, c] / max(have[t, c], 1) > fraction
                or seen_c[c] / max(have_c[c], 1) > fraction
                or seen_t[t] / max(have_t[t], 1) > fraction
            )
    for b in baselines:
        for t in range(ntime):
            for c in range(nchan):
                if common[t, c]:
                    rfi[b, t, c] = True


@numba.njit(cache=True)
def combine_flags(bad, rfi, bidx, tidx, dead_rows, flags, rfi_rows):
    """flags[r, c, p] = bad sample, RFI in the row's (baseline, time, channel) cell or a
    dead antenna; rfi_rows[r, c] the RFI mask in row layout."""
    nrow, nchan, npol = bad.shape
    for r in range(nrow):
        b, t, dead = bidx[r], tidx[r], dead_rows[r]
        for c in range(nchan):
            hit = rfi[b, t, c]
            rfi_rows[r, c] = hit
            for p in range(npol):
                flags[r, c, p] = bad[r, c, p] or hit or dead


@numba.njit(cache=True)
def place_subband(
    data, flag, nsample, order, pol_order, conj_rows, turns_per_hz, freqs, flip, chan0, out
):
    """One subband into the group's arrays `out` = (data, flag, nsample) from channel
    `chan0` on, in one pass: channels in `order` (ascending frequency), polarizations in
    `pol_order`, rows in `conj_rows` conjugated, every sample rephased by
    exp(-2 pi i turns_per_hz[row] freqs[k]) (computed in double precision), conjugated
    again when `flip`; NaN/Inf samples and nsamples <= 0 flagged with data 0 and nsample
    0. Returns the number of such bad samples."""
    out_data, out_flag, out_nsample = out
    nrow = data.shape[0]
    nchan = order.size
    npol = pol_order.size
    n_bad = 0
    for r in range(nrow):
        conj = conj_rows[r]
        for k in range(nchan):
            c = order[k]
            phase = -(2.0 * np.pi) * (turns_per_hz[r] * freqs[k])
            rot = complex(np.cos(phase), np.sin(phase))
            for q in range(npol):
                p = pol_order[q]
                v = np.complex128(data[r, c, p])
                if conj:
                    v = v.conjugate()
                v = np.complex64(v * rot)
                if flip:
                    v = v.conjugate()
                w = np.float32(nsample[r, c, p])
                bad = not (np.isfinite(v.real) and np.isfinite(v.imag)) or not (w > 0)
                if bad:
                    n_bad += 1
                    out_data[r, chan0 + k, q] = 0
                    out_flag[r, chan0 + k, q] = True
                    out_nsample[r, chan0 + k, q] = 0
                else:
                    out_data[r, chan0 + k, q] = v
                    out_flag[r, chan0 + k, q] = flag[r, c, p]
                    out_nsample[r, chan0 + k, q] = w
    return n_bad
