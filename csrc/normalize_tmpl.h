/* Template body of the apply and backward kernels; included by normalize.c
   once per dtype through instantiate.h (T the data type, NAME(f) the name). */

/* y = (x - mean) * scale + shift, in double, rounded once to T (then
   max(y, 0) with relu; NaN stays NaN).  Not x * scale + (shift - mean *
   scale): that loses the exact zero of a constant column to cancellation. */
BNF_DISPATCH
void NAME(rows_apply)(const T *restrict x, ptrdiff_t m, ptrdiff_t c,
                      ptrdiff_t ldx, const double *restrict mean,
                      const double *restrict scale,
                      const double *restrict shift, T *restrict y,
                      ptrdiff_t ldy, int relu)
{
    /* Two loops, and the ReLU taken in T after the rounding (+0 for
       v <= 0, NaN stays NaN, as np.maximum(v, 0)): GCC leaves a test of
       relu per element, or a select between double and T, scalar. */
    for (ptrdiff_t i = 0; i < m; i++) {
        const T *restrict x0 = x + i * ldx;
        T *restrict y0 = y + i * ldy;
        if (relu) {
            for (ptrdiff_t j = 0; j < c; j++) {
                T v = (T)(((double)x0[j] - mean[j]) * scale[j] + shift[j]);
                y0[j] = v <= 0 ? 0 : v;
            }
        } else {
            for (ptrdiff_t j = 0; j < c; j++)
                y0[j] = (T)(((double)x0[j] - mean[j]) * scale[j] + shift[j]);
        }
    }
}

/* Column sums of g and g * (x - mean), g = dy, or with a relu mask
   (ra != NULL) g = dy where the forward's (x - mean) * ra + rb > 0, else 0;
   in three levels: blocks of at most
   BNF_SUM_ROWS rows, groups of BNF_SUM_ROWS blocks, then the total, which
   keeps the rounding error of long columns near that of pairwise summation
   (np.sum).  Columns in tiles, as the statistics. */
BNF_DISPATCH
int NAME(rows_bwd_reduce)(const T *restrict dy, ptrdiff_t lddy,
                          const T *restrict x, ptrdiff_t ldx, ptrdiff_t m,
                          ptrdiff_t c, const double *restrict mean,
                          const double *restrict ra,
                          const double *restrict rb, double *restrict sum_dy,
                          double *restrict sum_dyxmu)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS);
    double *work = malloc(4 * (size_t)(tile > 0 ? tile : 1) * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    double *restrict bs = work, *restrict bq = work + tile;
    double *restrict gs = work + 2 * tile, *restrict gq = work + 3 * tile;

    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        const double *restrict mu = mean + c0;
        double *restrict ts = sum_dy + c0;
        double *restrict tq = sum_dyxmu + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            ts[j] = tq[j] = 0.0;
            gs[j] = gq[j] = 0.0;
        }
        ptrdiff_t blocks = 0;
        for (ptrdiff_t r0 = 0; r0 < m; r0 += BNF_SUM_ROWS) {
            ptrdiff_t r1 = bnf_min(r0 + BNF_SUM_ROWS, m);
            for (ptrdiff_t j = 0; j < tc; j++)
                bs[j] = bq[j] = 0.0;
            for (ptrdiff_t i = r0; i < r1; i++) {
                const T *restrict g = dy + i * lddy + c0;
                const T *restrict xr = x + i * ldx + c0;
                if (ra == NULL) {
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        double gj = (double)g[j];
                        bs[j] += gj;
                        bq[j] += gj * ((double)xr[j] - mu[j]);
                    }
                } else {
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        double xm = (double)xr[j] - mu[j];
                        double gv = (double)g[j];
                        double gj = gv * (double)(xm * ra[c0 + j] +
                                                  rb[c0 + j] > RELU_MIN);
                        bs[j] += gj;
                        bq[j] += gj * xm;
                    }
                }
            }
            for (ptrdiff_t j = 0; j < tc; j++) {
                gs[j] += bs[j];
                gq[j] += bq[j];
            }
            if (++blocks == BNF_SUM_ROWS || r1 == m) {
                for (ptrdiff_t j = 0; j < tc; j++) {
                    ts[j] += gs[j];
                    tq[j] += gq[j];
                    gs[j] = gq[j] = 0.0;
                }
                blocks = 0;
            }
        }
    }
    free(work);
    return BNF_OK;
}

/* dx = k_dy * g + k_xmu * (x - mean) + k_0, in double, rounded once; g
   as in rows_bwd_reduce. */
BNF_DISPATCH
void NAME(rows_bwd_apply)(const T *restrict dy, ptrdiff_t lddy,
                          const T *restrict x, ptrdiff_t ldx, ptrdiff_t m,
                          ptrdiff_t c, const double *restrict mean,
                          const double *restrict ra,
                          const double *restrict rb,
                          const double *restrict k_dy,
                          const double *restrict k_xmu,
                          const double *restrict k_0, T *restrict dx,
                          ptrdiff_t lddx)
{
    for (ptrdiff_t i = 0; i < m; i++) {
        const T *restrict g = dy + i * lddy;
        const T *restrict xr = x + i * ldx;
        T *restrict o = dx + i * lddx;
        if (ra == NULL) {
            for (ptrdiff_t j = 0; j < c; j++)
                o[j] = (T)(k_dy[j] * (double)g[j] +
                           k_xmu[j] * ((double)xr[j] - mean[j]) + k_0[j]);
        } else {
            for (ptrdiff_t j = 0; j < c; j++) {
                double xm = (double)xr[j] - mean[j], gv = (double)g[j];
                double gj = gv * (double)(xm * ra[j] + rb[j] > RELU_MIN);
                o[j] = (T)(k_dy[j] * gj + k_xmu[j] * xm + k_0[j]);
            }
        }
    }
}

