/* Template body of the fused statistics kernels; included by stats.c once
   per dtype with T (the data type) and SUF (the name suffix) defined. */

#define BNF_CAT_(a, b) a##_##b
#define BNF_CAT(a, b) BNF_CAT_(a, b)
#define NAME(f) BNF_CAT(f, SUF)

/*
 * Per-column mean and M2 of an (m, c) row-major panel.
 *
 * Columns are processed in tiles of at most BNF_TILE_COLS; the rows of a
 * tile in blocks of about BNF_BLOCK_BYTES.  Everything is computed on the
 * shifted data x - K, K the column's first (finite) value, so that means
 * round at the scale of the spread, not of the offset, and a constant column
 * gives exactly mean K and M2 0.  Within a block, two passes: pass 1 sums
 * x - K, pass 2 sums d = (x - K) - mean_b and d*d from cache and corrects
 * mean_b by sum(d)/nb (corrected two-pass algorithm).  Blocks are merged
 * with Chan's formula; K is added back at the end.  Never E[x^2] - E[x]^2.
 */
BNF_DISPATCH
int NAME(rows_stats)(const T *restrict x, ptrdiff_t m, ptrdiff_t c,
                     ptrdiff_t ldx, double *restrict mean, double *restrict m2)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS);
    double *work = malloc(4 * (size_t)(tile > 0 ? tile : 1) * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    double *restrict k = work;            /* the shift */
    double *restrict bm = work + tile;    /* block mean of x - K */
    double *restrict s = work + 2 * tile; /* sum of x - K, then of d */
    double *restrict q = work + 3 * tile; /* sum of d*d */

    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        ptrdiff_t rb = bnf_block_rows(tc, sizeof(T));
        double *restrict mu = mean + c0; /* running mean of x - K */
        double *restrict mm = m2 + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            double k0 = (double)x[c0 + j];
            k[j] = isfinite(k0) ? k0 : 0.0;
        }
        for (ptrdiff_t r0 = 0; r0 < m; r0 += rb) {
            ptrdiff_t nb = bnf_min(rb, m - r0);
            const T *restrict xb = x + r0 * ldx + c0;
            double dnb = (double)nb;

            for (ptrdiff_t j = 0; j < tc; j++)
                s[j] = 0.0;
            for (ptrdiff_t i = 0; i < nb; i++) {
                const T *restrict row = xb + i * ldx;
                for (ptrdiff_t j = 0; j < tc; j++)
                    s[j] += (double)row[j] - k[j];
            }
            for (ptrdiff_t j = 0; j < tc; j++) {
                bm[j] = s[j] / dnb;
                s[j] = 0.0;
                q[j] = 0.0;
            }
            for (ptrdiff_t i = 0; i < nb; i++) {
                const T *restrict row = xb + i * ldx;
                for (ptrdiff_t j = 0; j < tc; j++) {
                    double d = ((double)row[j] - k[j]) - bm[j];
                    s[j] += d;
                    q[j] += d * d;
                }
            }
            double na = (double)r0;
            for (ptrdiff_t j = 0; j < tc; j++) {
                double mb = bm[j], qb = q[j];
                if (isfinite(mb)) {
                    mb += s[j] / dnb;
                    qb -= s[j] * (s[j] / dnb);
                    if (qb < 0.0)
                        qb = 0.0;
                }
                if (r0 == 0) {
                    mu[j] = mb;
                    mm[j] = qb;
                } else {
                    bnf_chan_merge(na, dnb, mb, qb, &mu[j], &mm[j]);
                }
            }
        }
        for (ptrdiff_t j = 0; j < tc; j++)
            mu[j] += k[j];
    }
    free(work);
    return BNF_OK;
}

#undef NAME
#undef BNF_CAT
#undef BNF_CAT_
