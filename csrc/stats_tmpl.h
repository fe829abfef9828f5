/* Template body of the fused statistics kernels; included by stats.c once
   per dtype through instantiate.h (T the data type, NAME(f) the name). */

/*
 * Per-column mean and M2 of an (m, c) row-major panel, in one pass over
 * memory.
 *
 * Columns are processed in tiles of at most BNF_TILE_COLS, the rows of a
 * tile in blocks of about BNF_BLOCK_BYTES.  Everything is computed on the
 * shifted data x - K, K the column's first (finite) value, so that means
 * round at the scale of the spread, not of the offset, and a constant
 * column gives exactly mean K and M2 0.
 *
 * Each block sums d = x - c and d*d around a center c close to its mean and
 * corrects: mean_b = c + sum(d)/nb, M2_b = sum(d*d) - sum(d)**2/nb (the
 * corrected two-pass algorithm, exact to first order in c - mean_b).  The
 * first block's c comes from a pass over that block (read again from
 * cache); later blocks take the running mean as c, whose distance to the
 * block mean is of the order of std/sqrt(rows so far), so the correction
 * cancels nothing significant: the accuracy of a two-pass algorithm at the
 * memory traffic of one.  Blocks are merged with Chan's formula; K is added
 * back at the end.  Never E[x^2] - E[x]^2 about zero.
 *
 * The element-wise work is in the compute type C (instantiate.h): float32
 * data is centered, squared and summed in float32 for BNF_FLUSH rows at a
 * time, then added to double sums (groups of BNF_SUM_ROWS rows, blocks,
 * Chan's merge: all double).  A group whose float32 sums overflow (values
 * of a spread above ~1e19) or hold an Inf or NaN is summed again in
 * double, so float32 results are finite wherever the double ones are.
 */
BNF_DISPATCH
int NAME(rows_stats)(const T *restrict x, ptrdiff_t m, ptrdiff_t c,
                     ptrdiff_t ldx, double *restrict mean, double *restrict m2)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS), t1 = tile > 0 ? tile : 1;
    /* 6 double and 3 C arrays of a tile; the C ones after the doubles */
    double *work = malloc(6 * (size_t)t1 * sizeof(double) +
                          3 * (size_t)t1 * sizeof(C));
    if (work == NULL)
        return BNF_ENOMEM;
    double *restrict k = work;              /* the shift K */
    double *restrict bm = work + tile;      /* c - K, then block mean - K */
    double *restrict s = work + 2 * tile;   /* sum of d */
    double *restrict q = work + 3 * tile;   /* sum of d*d */
    double *restrict gs = work + 4 * tile;  /* group sums of d, d*d */
    double *restrict gq = work + 5 * tile;
    C *restrict cen = (C *)(work + 6 * t1); /* the block's center c */
    C *restrict fs = cen + t1;              /* C sums of d, d*d */
    C *restrict fq = fs + t1;

    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        ptrdiff_t rb = bnf_block_rows(tc, sizeof(T));
        double *restrict mu = mean + c0; /* running mean of x - K */
        double *restrict mm = m2 + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            double k0 = (double)LOAD(x[c0 + j]);
            k[j] = bnf_isfinite(k0) ? k0 : 0.0;
        }
        for (ptrdiff_t r0 = 0; r0 < m; r0 += rb) {
            ptrdiff_t nb = bnf_min(rb, m - r0), i;
            const T *restrict xb = x + r0 * ldx + c0;
            double dnb = (double)nb;

            /* the block's center c = K + an estimate of its mean, rounded
               to C.  First block: estimated by a pass over it in C (it
               only needs to be well within a standard deviation: the
               centered pass corrects it to first order).  Later blocks:
               the running mean, with no extra pass. */
            if (r0 == 0) {
                for (ptrdiff_t j = 0; j < tc; j++)
                    fs[j] = 0;
                for (i = 0; i + 4 <= nb; i += 4) {
                    const T *restrict x0 = xb + i * ldx, *restrict x1 = x0 + ldx;
                    const T *restrict x2 = x1 + ldx, *restrict x3 = x2 + ldx;
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        C kj = (C)k[j];
                        fs[j] += ((LOAD(x0[j]) - kj) + (LOAD(x1[j]) - kj)) +
                                 ((LOAD(x2[j]) - kj) + (LOAD(x3[j]) - kj));
                    }
                }
                for (; i < nb; i++) {
                    const T *restrict x0 = xb + i * ldx;
                    for (ptrdiff_t j = 0; j < tc; j++)
                        fs[j] += LOAD(x0[j]) - (C)k[j];
                }
                for (ptrdiff_t j = 0; j < tc; j++)
                    s[j] = (double)fs[j] / dnb;
            } else {
                for (ptrdiff_t j = 0; j < tc; j++)
                    s[j] = mu[j];
            }
            for (ptrdiff_t j = 0; j < tc; j++) {
                C cj = (C)(k[j] + s[j]);
                cj = bnf_isfinite((double)cj) ? cj : (C)0;
                cen[j] = cj;
                bm[j] = (double)cj - k[j];
                s[j] = 0.0;
                q[j] = 0.0;
            }
            /* the pass: d = x - c, s = sum d, q = sum d*d; rows four at a
               time, summed in C over BNF_FLUSH rows (fs, fq), those in
               double over groups of BNF_SUM_ROWS rows (gs, gq), added to
               the block's (s, q): the rounding of the sums stays small
               when the block mean is far from c (a trend) */
            for (ptrdiff_t g0 = 0; g0 < nb; g0 += BNF_SUM_ROWS) {
                ptrdiff_t g1 = bnf_min(g0 + BNF_SUM_ROWS, nb);
                for (ptrdiff_t j = 0; j < tc; j++)
                    gs[j] = gq[j] = 0.0;
                for (ptrdiff_t f0 = g0; f0 < g1; f0 += BNF_FLUSH) {
                    ptrdiff_t f1 = bnf_min(f0 + BNF_FLUSH, g1);
                    for (ptrdiff_t j = 0; j < tc; j++)
                        fs[j] = fq[j] = 0;
                    for (i = f0; i + 4 <= f1; i += 4) {
                        const T *restrict x0 = xb + i * ldx;
                        const T *restrict x1 = x0 + ldx;
                        const T *restrict x2 = x1 + ldx;
                        const T *restrict x3 = x2 + ldx;
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C d0 = LOAD(x0[j]) - cen[j];
                            C d1 = LOAD(x1[j]) - cen[j];
                            C d2 = LOAD(x2[j]) - cen[j];
                            C d3 = LOAD(x3[j]) - cen[j];
                            fs[j] += (d0 + d1) + (d2 + d3);
                            fq[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                        }
                    }
                    for (; i < f1; i++) {
                        const T *restrict x0 = xb + i * ldx;
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C d0 = LOAD(x0[j]) - cen[j];
                            fs[j] += d0;
                            fq[j] += d0 * d0;
                        }
                    }
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        gs[j] += (double)fs[j];
                        gq[j] += (double)fq[j];
                    }
                }
                /* a C sum that overflowed (or an Inf or NaN in the data)
                   leaves the group's double sum non-finite: the group
                   again in double */
                int bad = 0;
                if (HILO)
                    for (ptrdiff_t j = 0; j < tc; j++)
                        bad |= !bnf_isfinite(gq[j]);
                if (bad) {
                    for (ptrdiff_t j = 0; j < tc; j++)
                        gs[j] = gq[j] = 0.0;
                    for (i = g0; i < g1; i++) {
                        const T *restrict x0 = xb + i * ldx;
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            double d0 = (double)x0[j] - (double)cen[j];
                            gs[j] += d0;
                            gq[j] += d0 * d0;
                        }
                    }
                }
                for (ptrdiff_t j = 0; j < tc; j++) {
                    s[j] += gs[j];
                    q[j] += gq[j];
                }
            }
            /* corrected block mean and M2 (NaN stays NaN), merged into the
               running ones */
            for (ptrdiff_t j = 0; j < tc; j++) {
                double t = s[j] / dnb;
                double qc = q[j] - s[j] * t;
                bm[j] += t;
                q[j] = qc < 0.0 ? 0.0 : qc;
            }
            if (r0 == 0) {
                for (ptrdiff_t j = 0; j < tc; j++) {
                    mu[j] = bm[j];
                    mm[j] = q[j];
                }
            } else {
                bnf_chan_merge(tc, (double)r0, dnb, bm, q, mu, mm);
            }
        }
        for (ptrdiff_t j = 0; j < tc; j++)
            mu[j] += k[j];
    }
    free(work);
    return BNF_OK;
}
