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
 */
BNF_DISPATCH
int NAME(rows_stats)(const T *restrict x, ptrdiff_t m, ptrdiff_t c,
                     ptrdiff_t ldx, double *restrict mean, double *restrict m2)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS);
    double *work = malloc(7 * (size_t)(tile > 0 ? tile : 1) * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    double *restrict k = work;              /* the shift K */
    double *restrict cen = work + tile;     /* the block's center c */
    double *restrict bm = work + 2 * tile;  /* c - K, then block mean - K */
    double *restrict s = work + 3 * tile;   /* sum of x - K, then of d */
    double *restrict q = work + 4 * tile;   /* sum of d*d */
    double *restrict gs = work + 5 * tile;  /* group sums of d, d*d */
    double *restrict gq = work + 6 * tile;

    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        ptrdiff_t rb = bnf_block_rows(tc, sizeof(T));
        double *restrict mu = mean + c0; /* running mean of x - K */
        double *restrict mm = m2 + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            double k0 = (double)x[c0 + j];
            k[j] = bnf_isfinite(k0) ? k0 : 0.0;
        }
        for (ptrdiff_t r0 = 0; r0 < m; r0 += rb) {
            ptrdiff_t nb = bnf_min(rb, m - r0), i;
            const T *restrict xb = x + r0 * ldx + c0;
            double dnb = (double)nb;

            /* the block's center c = fl(K + estimate of its mean); bm = c - K
               is exact (Sterbenz).  First block: estimated by a pass over it
               (pairs of two rows, K subtracted once per four rows: pass 2
               corrects what this rounds).  Later blocks: the running mean,
               with no extra pass. */
            if (r0 == 0) {
                for (ptrdiff_t j = 0; j < tc; j++)
                    s[j] = 0.0;
                for (i = 0; i + 4 <= nb; i += 4) {
                    const T *restrict x0 = xb + i * ldx, *restrict x1 = x0 + ldx;
                    const T *restrict x2 = x1 + ldx, *restrict x3 = x2 + ldx;
                    for (ptrdiff_t j = 0; j < tc; j++)
                        s[j] += (((double)x0[j] + (double)x1[j]) +
                                 ((double)x2[j] + (double)x3[j])) - 4.0 * k[j];
                }
                for (; i < nb; i++) {
                    const T *restrict x0 = xb + i * ldx;
                    for (ptrdiff_t j = 0; j < tc; j++)
                        s[j] += (double)x0[j] - k[j];
                }
                for (ptrdiff_t j = 0; j < tc; j++)
                    s[j] /= dnb;
            } else {
                for (ptrdiff_t j = 0; j < tc; j++)
                    s[j] = mu[j];
            }
            for (ptrdiff_t j = 0; j < tc; j++) {
                double cj = k[j] + s[j];
                cj = bnf_isfinite(cj) ? cj : 0.0;
                cen[j] = cj;
                bm[j] = cj - k[j];
                s[j] = 0.0;
                q[j] = 0.0;
            }
            /* the pass: d = x - c, s = sum d, q = sum d*d; rows four at a
               time, in groups of BNF_SUM_ROWS rows whose sums (gs, gq) are
               added to the block's (s, q): the rounding of the sums stays
               small when the block mean is far from c (a trend) */
            for (ptrdiff_t g0 = 0; g0 < nb; g0 += BNF_SUM_ROWS) {
                ptrdiff_t g1 = bnf_min(g0 + BNF_SUM_ROWS, nb);
                for (ptrdiff_t j = 0; j < tc; j++)
                    gs[j] = gq[j] = 0.0;
                for (i = g0; i + 4 <= g1; i += 4) {
                    const T *restrict x0 = xb + i * ldx, *restrict x1 = x0 + ldx;
                    const T *restrict x2 = x1 + ldx, *restrict x3 = x2 + ldx;
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        double d0 = (double)x0[j] - cen[j];
                        double d1 = (double)x1[j] - cen[j];
                        double d2 = (double)x2[j] - cen[j];
                        double d3 = (double)x3[j] - cen[j];
                        gs[j] += (d0 + d1) + (d2 + d3);
                        gq[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                    }
                }
                for (; i < g1; i++) {
                    const T *restrict x0 = xb + i * ldx;
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        double d0 = (double)x0[j] - cen[j];
                        gs[j] += d0;
                        gq[j] += d0 * d0;
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

