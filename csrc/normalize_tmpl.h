/* Template body of the across-rows apply and backward kernels; included by
   normalize.c once per dtype through instantiate.h (T the storage type, C
   the compute type, NAME(f) the name).  Per-column coefficients come as a
   NAME(bnf_coefs) of C arrays (internal.h).  Rows are taken four at a
   time, so that each column's coefficients are loaded once for four
   rows. */

/* One output element of the apply: (x - mh) * a + b in C (b = beta -
   ml * a: the low part of the mean folded into the shift, exact to the
   rounding of the result), rounded once to T; with relu max(., 0) on the
   stored value (+0 for v <= 0, NaN stays NaN, as np.maximum(v, 0)).  Not
   x * a + (b - mean * a): that loses the exact zero of a constant column
   to cancellation.  One row at a time: rows taken several at once (to
   load each coefficient once for them) write several streams within one
   page when rows are short, which the hardware prefetchers follow badly
   (measured: 2x slower on float64 channels-last, 64 channels). */
BNF_DISPATCH
void NAME(rows_apply)(const T *restrict x, ptrdiff_t m, ptrdiff_t c,
                      ptrdiff_t ldx, NAME(bnf_coefs) cf, T *restrict y,
                      ptrdiff_t ldy, int relu)
{
    const C *restrict mh = cf.mh, *restrict a = cf.a, *restrict b = cf.b;
    /* two loops, and the ReLU taken after the rounding: GCC leaves a test
       of relu per element scalar */
    for (ptrdiff_t i = 0; i < m; i++) {
        const T *restrict x0 = x + i * ldx;
        T *restrict y0 = y + i * ldy;
        if (relu) {
            for (ptrdiff_t j = 0; j < c; j++) {
                C v0 = (LOAD(x0[j]) - mh[j]) * a[j] + b[j];
                y0[j] = v0 <= RELU_MIN ? STORE(0) : STORE(v0);
            }
        } else {
            for (ptrdiff_t j = 0; j < c; j++)
                y0[j] = STORE((LOAD(x0[j]) - mh[j]) * a[j] + b[j]);
        }
    }
}

/* Column sums of g and g * (x - mean), g = dy, or with relu g = dy where
   the forward's (x - mh) * a + b > 0, else 0; in four levels: C sums of
   BNF_FLUSH rows, double blocks of at most BNF_SUM_ROWS rows, groups of
   BNF_SUM_ROWS blocks, then the total, which keeps the rounding error of
   long columns near that of pairwise summation (np.sum).  Columns in
   tiles, as the statistics. */
BNF_DISPATCH
int NAME(rows_bwd_reduce)(const T *restrict dy, ptrdiff_t lddy,
                          const T *restrict x, ptrdiff_t ldx, ptrdiff_t m,
                          ptrdiff_t c, NAME(bnf_coefs) cf, int relu,
                          double *restrict sum_dy, double *restrict sum_dyxmu)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS), t1 = tile > 0 ? tile : 1;
    double *work = malloc(4 * (size_t)t1 * sizeof(double) +
                          2 * (size_t)t1 * sizeof(C));
    if (work == NULL)
        return BNF_ENOMEM;
    double *restrict bs = work, *restrict bq = work + tile;
    double *restrict gs = work + 2 * tile, *restrict gq = work + 3 * tile;
    C *restrict fs = (C *)(work + 4 * t1), *restrict fq = fs + t1;

    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        const C *restrict mh = cf.mh + c0;
        const C *restrict ml = HILO ? cf.ml + c0 : NULL;
        const C *restrict ra = relu ? cf.a + c0 : NULL;
        const C *restrict rb = relu ? cf.b + c0 : NULL;
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
            for (ptrdiff_t f0 = r0; f0 < r1; f0 += BNF_FLUSH) {
                ptrdiff_t f1 = bnf_min(f0 + BNF_FLUSH, r1);
                for (ptrdiff_t j = 0; j < tc; j++)
                    fs[j] = fq[j] = 0;
                for (ptrdiff_t i = f0; i < f1; i++) {
                    const T *restrict g0 = dy + i * lddy + c0;
                    const T *restrict xa = x + i * ldx + c0;
                    if (!relu) {
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C u0 = LOAD(g0[j]);
                            fs[j] += u0;
                            fq[j] += u0 * (LOAD(xa[j]) - mh[j]);
                        }
                    } else {
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C d = LOAD(xa[j]) - mh[j];
                            C u0 = LOAD(g0[j]) *
                                   (C)(d * ra[j] + rb[j] > RELU_MIN);
                            fs[j] += u0;
                            fq[j] += u0 * d;
                        }
                    }
                }
                /* sum g * (x - mean) = sum g * (x - mh) - ml * sum g */
                for (ptrdiff_t j = 0; j < tc; j++) {
                    bs[j] += (double)fs[j];
                    bq[j] += (double)fq[j] -
                             (HILO ? (double)ml[j] * (double)fs[j] : 0.0);
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

/* One element of dx: a * g + k_xhat * ((x - mean) * is) + k_0 in C,
   rounded once; g as in rows_bwd_reduce. */
#define BNF_BWD1(gv, xv, j)                                                  \
    (a[j] * LOAD(gv) +                                                       \
     kx[j] * (XMU(LOAD(xv), mh[j], HILO ? ml[j] : 0) * is[j]) + k0[j])

BNF_DISPATCH
void NAME(rows_bwd_apply)(const T *restrict dy, ptrdiff_t lddy,
                          const T *restrict x, ptrdiff_t ldx, ptrdiff_t m,
                          ptrdiff_t c, NAME(bnf_coefs) cf, int relu,
                          T *restrict dx, ptrdiff_t lddx)
{
    const C *restrict mh = cf.mh, *restrict ml = cf.ml;
    const C *restrict a = cf.a, *restrict is = cf.is;
    const C *restrict kx = cf.k_xhat, *restrict k0 = cf.k_0;
    ptrdiff_t i = 0;
    if (!relu) {
        for (; i < m; i++) {
            const T *restrict g0 = dy + i * lddy;
            const T *restrict x0 = x + i * ldx;
            T *restrict o0 = dx + i * lddx;
            for (ptrdiff_t j = 0; j < c; j++)
                o0[j] = STORE(BNF_BWD1(g0[j], x0[j], j));
        }
    } else {
        const C *restrict rb = cf.b;
        for (; i < m; i++) {
            const T *restrict g0 = dy + i * lddy;
            const T *restrict x0 = x + i * ldx;
            T *restrict o0 = dx + i * lddx;
            for (ptrdiff_t j = 0; j < c; j++) {
                C d = LOAD(x0[j]) - mh[j];
                C xm = HILO ? d - ml[j] : d;
                C ge = LOAD(g0[j]) * (C)(d * a[j] + rb[j] > RELU_MIN);
                o0[j] = STORE(a[j] * ge + kx[j] * (xm * is[j]) + k0[j]);
            }
        }
    }
}

#undef BNF_BWD1
