"""Numba kernels of the drift fit (module `drift`), at module level so that numba's
on-disk cache (cache=True) is found by every later process: defined inside a function,
they were compiled afresh in every imaging job (~13 s each).

Per row, the phase of every source in channel f0 + j df follows from the block's first
channel by the recurrence z_{j+1} = z_j exp(2 pi i df tau / c), so the sample loop has no
exponential; the normal matrix takes a pair's phase at the block start from the same
rotations, z_q conj(z_m), so it has none either with one channel per block (the demo's
5.9 MHz channels; 4.1 s instead of 9.6 s for 36 sources in a demo group).
"""

import numba
import numpy as np

from dsa110_contimg.instrument import SPEED_OF_LIGHT

TWO_PI_OVER_C = 2.0 * np.pi / SPEED_OF_LIGHT


@numba.njit(cache=True)
def layout(lmn, term_src, n_chan, block, freqs):
    """(sources, terms, channel blocks, channel width Hz) of a kernel call."""
    df = freqs[1] - freqs[0] if n_chan > 1 else 0.0
    return lmn.shape[0], term_src.size, n_chan // block, df


@numba.njit(cache=True)
def row_phase_rates(uvw, lmn, r, t):
    """2 pi w_k / c (rad per Hz) of row r toward each source k at time index t."""
    tau = np.empty(lmn.shape[0])
    for k in range(lmn.shape[0]):
        tau[k] = (
            uvw[r, 0] * lmn[k, t, 0] + uvw[r, 1] * lmn[k, t, 1] + uvw[r, 2] * lmn[k, t, 2]
        ) * TWO_PI_OVER_C
    return tau


@numba.njit(parallel=True, cache=True)
def fit_rows(uvw, tidx, vis, wt, lmn, term_src, term_amp, freqs, block, b_out, g_out):
    n_row, n_chan = vis.shape
    n_src, n_term, n_blk, df = layout(lmn, term_src, n_chan, block, freqs)
    for r in numba.prange(n_row):
        t = tidx[r]
        tau = row_phase_rates(uvw, lmn, r, t)
        rot = np.empty(n_src, np.complex128)
        rot0 = np.empty(n_src, np.complex128)
        abar = np.empty(n_term)
        step = np.exp(1j * tau * df)
        for c in range(n_blk):
            c0 = c * block
            for k in range(n_src):
                rot[k] = np.exp(1j * tau[k] * freqs[c0])
                rot0[k] = rot[k]
            wsum = 0.0
            for m in range(n_term):
                abar[m] = 0.0
            for j in range(block):
                ch = c0 + j
                w = wt[r, ch]
                if w > 0.0:
                    v = vis[r, ch]
                    wsum += w
                    for m in range(n_term):
                        z = rot[term_src[m]]
                        a = term_amp[m, t, ch]
                        b_out[r, m] += w * a * (z.real * v.real + z.imag * v.imag)
                        abar[m] += w * a
                for k in range(n_src):
                    rot[k] *= step[k]
            if wsum == 0.0:
                continue
            # normal matrix per block: weights and beams averaged over the block,
            # the phase difference summed exactly (a Dirichlet kernel); the pair's
            # phase exp(i (tau_q - tau_m) f_c0) is rot0_q conj(rot0_m), no exponential
            for m in range(n_term):
                km = term_src[m]
                for q in range(m, n_term):
                    kq = term_src[q]
                    phase = rot0[kq] * np.conj(rot0[km])
                    x = (tau[kq] - tau[km]) * df
                    if block == 1 or abs(x) < 1e-12:
                        g = phase.real
                    else:
                        e1 = step[kq] * np.conj(step[km])
                        dirichlet = (1.0 - np.exp(1j * x * block)) / (1.0 - e1)
                        g = (phase * dirichlet).real / block
                    g_out[r, m, q] += abar[m] * abar[q] / wsum * g


@numba.njit(parallel=True, cache=True)
def predict_rows(uvw, tidx, lmn, term_src, term_amp, coef, freqs, block, out):
    n_row, n_chan = out.shape
    n_src, n_term, n_blk, df = layout(lmn, term_src, n_chan, block, freqs)
    for r in numba.prange(n_row):
        t = tidx[r]
        tau = row_phase_rates(uvw, lmn, r, t)
        rot = np.empty(n_src, np.complex128)
        for c in range(n_blk):
            c0 = c * block
            for k in range(n_src):
                rot[k] = np.exp(1j * tau[k] * freqs[c0])
            step = np.exp(1j * tau * df)
            for j in range(block):
                ch = c0 + j
                acc = 0j
                for m in range(n_term):
                    acc += coef[m] * term_amp[m, t, ch] * rot[term_src[m]]
                out[r, ch] = acc
                for k in range(n_src):
                    rot[k] *= step[k]
