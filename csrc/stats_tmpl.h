/* Template body of the fused statistics kernels; included by stats.c once
   per dtype with T (the data type) and SUF (the name suffix) defined. */

#define BNF_CAT_(a, b) a##_##b
#define BNF_CAT(a, b) BNF_CAT_(a, b)
#define NAME(f) BNF_CAT(f, SUF)

/*
 * Per-column mean and M2 of an (m, c) row-major panel.
 *
 * Columns are processed in tiles of at most BNF_TILE_COLS; the rows of a
 * tile in blocks of about BNF_BLOCK_BYTES.  Within a block, a two-pass
 * computation: pass 1 sums x - K (K the block's first row, a shift that
 * makes a constant column give exactly zero), pass 2 sums d = x - mean_b and
 * d*d from cache, and corrects mean_b by sum(d)/nb (corrected two-pass
 * algorithm).  Blocks are merged with Chan's formula.  Never E[x^2] - E[x]^2.
 */
BNF_DISPATCH
int NAME(rows_stats)(const T *restrict x, ptrdiff_t m, ptrdiff_t c,
                     ptrdiff_t ldx, double *restrict mean, double *restrict m2)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS);
    double *work = malloc(3 * (size_t)(tile > 0 ? tile : 1) * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    double *restrict bm = work;        /* block shift, then block mean */
    double *restrict s = work + tile;  /* sum of x - K, then sum of d */
    double *restrict q = work + 2 * tile; /* sum of d*d */

    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        ptrdiff_t rb = bnf_block_rows(tc, sizeof(T));
        double *restrict mu = mean + c0;
        double *restrict mm = m2 + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            mu[j] = 0.0;
            mm[j] = 0.0;
        }
        for (ptrdiff_t r0 = 0; r0 < m; r0 += rb) {
            ptrdiff_t nb = bnf_min(rb, m - r0);
            const T *restrict xb = x + r0 * ldx + c0;
            double dnb = (double)nb;

            for (ptrdiff_t j = 0; j < tc; j++) {
                double k = (double)xb[j];
                bm[j] = isfinite(k) ? k : 0.0;
                s[j] = 0.0;
            }
            for (ptrdiff_t i = 0; i < nb; i++) {
                const T *restrict row = xb + i * ldx;
                for (ptrdiff_t j = 0; j < tc; j++)
                    s[j] += (double)row[j] - bm[j];
            }
            for (ptrdiff_t j = 0; j < tc; j++) {
                bm[j] += s[j] / dnb;
                s[j] = 0.0;
                q[j] = 0.0;
            }
            for (ptrdiff_t i = 0; i < nb; i++) {
                const T *restrict row = xb + i * ldx;
                for (ptrdiff_t j = 0; j < tc; j++) {
                    double d = (double)row[j] - bm[j];
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
    }
    free(work);
    return BNF_OK;
}

#undef NAME
#undef BNF_CAT
#undef BNF_CAT_
