/* Template body of the across-rows kernels; included by rows.c once per
   dtype through instantiate.h (T the storage type, C the compute type,
   NAME(f) the name).  The mirror of runs_tmpl.h (along runs): the data is
   an (m, c) row-major panel with unit column stride, element (i, j) at
   x[i*ldx + j], one result per column; the statistics (rows_stats), the
   apply pass (rows_apply), the backward's sums (rows_bwd_reduce) and its
   apply pass (rows_bwd_apply).  Per-column coefficients come as a
   NAME(bnf_coefs) of C arrays (internal.h).  The inner loops run along the
   row, across columns, and vectorize. */

/* Rows of at least this many bytes are taken several at a time by the
   apply passes and the backward reduce, so that each column's
   coefficients and accumulators are loaded once for them: with wide rows
   the coefficient arrays (3 to 6 of them, of c values each) no longer
   fit in L1 beside the rows and would be read from L2 for every element
   (measured on a Zen 3: the float64 apply of 256x1024 at 2.6 copies'
   time).  Narrow rows one at a time: four of them
   write four streams within one page, which the hardware prefetchers
   follow badly (measured: 2x slower on float64 channels-last, 64
   channels), and their coefficients stay in L1 anyway. */
#define BNF_WIDE_ROW 4096
/* The statistics take four rows at a time when they are wide, and always
   in float32: measured (interleaved A/B, Zen 3), single rows were 0.75-
   0.85x on wide rows of both dtypes and on float32 channels-last (64
   channels), but 1.2-1.4x on float64 channels-last (64 channels). */
#define BNF_STATS_ROWS4(tile)                                                 \
    (HILO || (tile) * (ptrdiff_t)sizeof(T) >= BNF_WIDE_ROW)

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
int NAME(rows_stats)(const T *BNF_RESTRICT x, ptrdiff_t m, ptrdiff_t c,
                     ptrdiff_t ldx, double *BNF_RESTRICT mean,
                     double *BNF_RESTRICT m2, double *BNF_RESTRICT mean_lo)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS), t1 = tile > 0 ? tile : 1;
    /* 6 double and 3 C arrays of a tile; the C ones after the doubles */
    double *work = malloc(6 * (size_t)t1 * sizeof(double) +
                          3 * (size_t)t1 * sizeof(C));
    if (work == NULL)
        return BNF_ENOMEM;
    double *BNF_RESTRICT k = work;             /* the shift K */
    double *BNF_RESTRICT bm = work + tile;     /* c - K, then block mean - K */
    double *BNF_RESTRICT s = work + 2 * tile;  /* sum of d */
    double *BNF_RESTRICT q = work + 3 * tile;  /* sum of d*d */
    double *BNF_RESTRICT gs = work + 4 * tile; /* group sums of d, d*d */
    double *BNF_RESTRICT gq = work + 5 * tile;
    C *BNF_RESTRICT cen = (C *)(work + 6 * t1); /* the block's center c */
    C *BNF_RESTRICT fs = cen + t1;              /* C sums of d, d*d */
    C *BNF_RESTRICT fq = fs + t1;

    int four = BNF_STATS_ROWS4(tile);
    ptrdiff_t sflush = HILO ? BNF_FLUSH : BNF_SUM_ROWS;
    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        ptrdiff_t rb = bnf_block_rows(tc, sizeof(T));
        double *BNF_RESTRICT mu = mean + c0; /* running mean of x - K */
        double *BNF_RESTRICT mm = m2 + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            double k0 = (double)LOAD(x[c0 + j]);
            k[j] = bnf_isfinite(k0) ? k0 : 0.0;
        }
        for (ptrdiff_t r0 = 0; r0 < m; r0 += rb) {
            ptrdiff_t nb = bnf_min(rb, m - r0), i;
            const T *BNF_RESTRICT xb = x + r0 * ldx + c0;
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
                    const T *BNF_RESTRICT x0 = xb + i * ldx,
                                          *BNF_RESTRICT x1 = x0 + ldx;
                    const T *BNF_RESTRICT x2 = x1 + ldx,
                                          *BNF_RESTRICT x3 = x2 + ldx;
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        C kj = (C)k[j];
                        fs[j] += ((LOAD(x0[j]) - kj) + (LOAD(x1[j]) - kj)) +
                                 ((LOAD(x2[j]) - kj) + (LOAD(x3[j]) - kj));
                    }
                }
                for (; i < nb; i++) {
                    const T *BNF_RESTRICT x0 = xb + i * ldx;
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
               when the block mean is far from c (a trend).  float64: the
               whole group in the C (double) sums, as when its BNF_FLUSH
               was a block (NumPy's axis-0 sums, the reference's, are
               recursive; a constant column is exact) */
            for (ptrdiff_t g0 = 0; g0 < nb; g0 += BNF_SUM_ROWS) {
                ptrdiff_t g1 = bnf_min(g0 + BNF_SUM_ROWS, nb);
                for (ptrdiff_t j = 0; j < tc; j++)
                    gs[j] = gq[j] = 0.0;
                for (ptrdiff_t f0 = g0; f0 < g1; f0 += sflush) {
                    ptrdiff_t f1 = bnf_min(f0 + sflush, g1);
                    for (ptrdiff_t j = 0; j < tc; j++)
                        fs[j] = fq[j] = 0;
                    for (i = f0; four && i + 4 <= f1; i += 4) {
                        const T *BNF_RESTRICT x0 = xb + i * ldx;
                        const T *BNF_RESTRICT x1 = x0 + ldx;
                        const T *BNF_RESTRICT x2 = x1 + ldx;
                        const T *BNF_RESTRICT x3 = x2 + ldx;
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
                        const T *BNF_RESTRICT x0 = xb + i * ldx;
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
                        const T *BNF_RESTRICT x0 = xb + i * ldx;
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            double d0 = (double)LOAD(x0[j]) - (double)cen[j];
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
        for (ptrdiff_t j = 0; j < tc; j++) {
            double lo;
            mu[j] = bnf_two_sum(mu[j], k[j], &lo);
            if (mean_lo != NULL)
                mean_lo[c0 + j] = lo;
        }
    }
    free(work);
    return BNF_OK;
}

/* One output element of the apply: (x - mh) * a + b in C (b = beta -
   ml * a: the low part of the mean folded into the shift, exact to the
   rounding of the result), rounded once to T.  Not x * a + (b - mean *
   a): that loses the exact zero of a constant column to cancellation. */
#define BNF_APPLY1(xv, j) ((LOAD(xv) - mh[j]) * a[j] + b[j])
/* with relu: max(., 0) on the stored value (+0 for v <= 0, NaN stays NaN,
   as np.maximum(v, 0)) */
#define BNF_RELU1(v) ((v) <= RELU_MIN ? STORE(0) : STORE(v))

void NAME(rows_apply)(const T *BNF_RESTRICT x, ptrdiff_t m, ptrdiff_t c,
                      ptrdiff_t ldx, NAME(bnf_coefs) cf, T *BNF_RESTRICT y,
                      ptrdiff_t ldy, int relu)
{
    const C *BNF_RESTRICT mh = cf.mh, *BNF_RESTRICT a = cf.a,
                          *BNF_RESTRICT b = cf.b;
    ptrdiff_t i = 0;
    /* separate loops with and without relu: GCC leaves a test of relu per
       element scalar */
    if (c * (ptrdiff_t)sizeof(T) >= BNF_WIDE_ROW) {
        for (; i + 4 <= m; i += 4) {
            const T *BNF_RESTRICT x0 = x + i * ldx,
                                  *BNF_RESTRICT x1 = x0 + ldx;
            const T *BNF_RESTRICT x2 = x1 + ldx, *BNF_RESTRICT x3 = x2 + ldx;
            T *BNF_RESTRICT y0 = y + i * ldy, *BNF_RESTRICT y1 = y0 + ldy;
            T *BNF_RESTRICT y2 = y1 + ldy, *BNF_RESTRICT y3 = y2 + ldy;
            if (relu) {
                for (ptrdiff_t j = 0; j < c; j++) {
                    C v0 = BNF_APPLY1(x0[j], j), v1 = BNF_APPLY1(x1[j], j);
                    C v2 = BNF_APPLY1(x2[j], j), v3 = BNF_APPLY1(x3[j], j);
                    y0[j] = BNF_RELU1(v0);
                    y1[j] = BNF_RELU1(v1);
                    y2[j] = BNF_RELU1(v2);
                    y3[j] = BNF_RELU1(v3);
                }
            } else {
                for (ptrdiff_t j = 0; j < c; j++) {
                    y0[j] = STORE(BNF_APPLY1(x0[j], j));
                    y1[j] = STORE(BNF_APPLY1(x1[j], j));
                    y2[j] = STORE(BNF_APPLY1(x2[j], j));
                    y3[j] = STORE(BNF_APPLY1(x3[j], j));
                }
            }
        }
    }
    for (; i < m; i++) {
        const T *BNF_RESTRICT x0 = x + i * ldx;
        T *BNF_RESTRICT y0 = y + i * ldy;
        if (relu) {
            for (ptrdiff_t j = 0; j < c; j++) {
                C v0 = BNF_APPLY1(x0[j], j);
                y0[j] = BNF_RELU1(v0);
            }
        } else {
            for (ptrdiff_t j = 0; j < c; j++)
                y0[j] = STORE(BNF_APPLY1(x0[j], j));
        }
    }
}

/* The fused residual: y = (x - mh) * a + b + z in C (then max(., 0) with
   relu), rounded once to T; z NULL: the residual is y itself (the in-place
   add of an inference block, out=residual), read before it is written. */
#define BNF_RES_ROW(ZV)                                                       \
    do {                                                                      \
        if (relu) {                                                           \
            for (ptrdiff_t j = 0; j < c; j++) {                               \
                C v0 = BNF_APPLY1(x0[j], j) + LOAD(ZV);                       \
                y0[j] = BNF_RELU1(v0);                                        \
            }                                                                 \
        } else {                                                              \
            for (ptrdiff_t j = 0; j < c; j++)                                 \
                y0[j] = STORE(BNF_APPLY1(x0[j], j) + LOAD(ZV));               \
        }                                                                     \
    } while (0)

void NAME(rows_apply_res)(const T *BNF_RESTRICT x, ptrdiff_t m, ptrdiff_t c,
                          ptrdiff_t ldx, const T *BNF_RESTRICT z,
                          ptrdiff_t ldz, NAME(bnf_coefs) cf, T *BNF_RESTRICT y,
                          ptrdiff_t ldy, int relu)
{
    const C *BNF_RESTRICT mh = cf.mh, *BNF_RESTRICT a = cf.a,
                          *BNF_RESTRICT b = cf.b;
    for (ptrdiff_t i = 0; i < m; i++) {
        const T *BNF_RESTRICT x0 = x + i * ldx;
        T *BNF_RESTRICT y0 = y + i * ldy;
        if (z != NULL) {
            const T *BNF_RESTRICT z0 = z + i * ldz;
            BNF_RES_ROW(z0[j]);
        } else {
            BNF_RES_ROW(y0[j]);
        }
    }
}

/* The fused residual's ReLU gate: g = dy where the forward's
   (x - mh) * a + b + z > 0, else 0 (dresidual, and the dy of the plain
   backward that follows) */
void NAME(rows_gate_res)(const T *BNF_RESTRICT dy, ptrdiff_t lddy,
                         const T *BNF_RESTRICT x, ptrdiff_t ldx,
                         const T *BNF_RESTRICT z, ptrdiff_t ldz, ptrdiff_t m,
                         ptrdiff_t c, NAME(bnf_coefs) cf, T *BNF_RESTRICT g,
                         ptrdiff_t ldg)
{
    const C *BNF_RESTRICT mh = cf.mh, *BNF_RESTRICT a = cf.a,
                          *BNF_RESTRICT b = cf.b;
    for (ptrdiff_t i = 0; i < m; i++) {
        const T *BNF_RESTRICT g0 = dy + i * lddy,
                              *BNF_RESTRICT x0 = x + i * ldx;
        const T *BNF_RESTRICT z0 = z + i * ldz;
        T *BNF_RESTRICT o0 = g + i * ldg;
        for (ptrdiff_t j = 0; j < c; j++)
            o0[j] = STORE(BNF_GATE(
                LOAD(g0[j]), BNF_APPLY1(x0[j], j) + LOAD(z0[j]), RELU_MIN));
    }
}
#undef BNF_RES_ROW

/* Column sums of g and g * (x - mean), g = dy, or with relu g = dy where
   the forward's (x - mh) * a + b > 0, else 0; in four levels: C sums of
   BNF_FLUSH rows, double blocks of at most BNF_SUM_ROWS rows, groups of
   BNF_SUM_ROWS blocks, then the total, which keeps the rounding error of
   long columns near that of pairwise summation (np.sum).  float64: the
   blocks of BNF_SUM_ROWS rows (sums of 2 * BNF_FLUSH narrow rows taken
   one at a time, or of 4 * BNF_FLUSH wide rows four at a time: a
   two-rows-at-a-time loop for narrow rows ran the float64 backward
   1.2-1.4x slower at 4096x256 and channels-last (32, 28, 28, 64)) added
   to a compensated total (bnf_two_sum,
   low parts in gs, gq), so that a column's error is that of a block,
   whatever its length (before, recursive over 128 rows, then 128
   blocks: 10x NumPy's error on a repeated dy).  Columns in tiles, as the
   statistics. */
int NAME(rows_bwd_reduce)(const T *BNF_RESTRICT dy, ptrdiff_t lddy,
                          const T *BNF_RESTRICT x, ptrdiff_t ldx, ptrdiff_t m,
                          ptrdiff_t c, NAME(bnf_coefs) cf, int relu,
                          double *BNF_RESTRICT sum_dy,
                          double *BNF_RESTRICT sum_dyxmu)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS), t1 = tile > 0 ? tile : 1;
    double *work = malloc(4 * (size_t)t1 * sizeof(double) +
                          2 * (size_t)t1 * sizeof(C));
    if (work == NULL)
        return BNF_ENOMEM;
    double *BNF_RESTRICT bs = work, *BNF_RESTRICT bq = work + tile;
    double *BNF_RESTRICT gs = work + 2 * tile,
                         *BNF_RESTRICT gq = work + 3 * tile;
    C *BNF_RESTRICT fs = (C *)(work + 4 * t1), *BNF_RESTRICT fq = fs + t1;

    int wide = tile * (ptrdiff_t)sizeof(T) >= BNF_WIDE_ROW;
    ptrdiff_t flush = HILO ? BNF_FLUSH : (wide ? 4 : 2) * BNF_FLUSH;
    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        const C *BNF_RESTRICT mh = cf.mh + c0;
        const C *BNF_RESTRICT ml = HILO ? cf.ml + c0 : NULL;
        const C *BNF_RESTRICT ra = relu ? cf.a + c0 : NULL;
        const C *BNF_RESTRICT rb = relu ? cf.b + c0 : NULL;
        double *BNF_RESTRICT ts = sum_dy + c0;
        double *BNF_RESTRICT tq = sum_dyxmu + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            ts[j] = tq[j] = 0.0;
            gs[j] = gq[j] = 0.0;
        }
        ptrdiff_t blocks = 0;
        for (ptrdiff_t r0 = 0; r0 < m; r0 += BNF_SUM_ROWS) {
            ptrdiff_t r1 = bnf_min(r0 + BNF_SUM_ROWS, m);
            for (ptrdiff_t j = 0; j < tc; j++)
                bs[j] = bq[j] = 0.0;
            for (ptrdiff_t f0 = r0; f0 < r1; f0 += flush) {
                ptrdiff_t f1 = bnf_min(f0 + flush, r1);
                for (ptrdiff_t j = 0; j < tc; j++)
                    fs[j] = fq[j] = 0;
                ptrdiff_t i = f0;
                /* wide rows four at a time: the accumulators are loaded
                   and stored once for four rows (BNF_WIDE_ROW) */
                for (; wide && i + 4 <= f1; i += 4) {
                    const T *BNF_RESTRICT g0 = dy + i * lddy + c0;
                    const T *BNF_RESTRICT g1 = g0 + lddy,
                                          *BNF_RESTRICT g2 = g1 + lddy;
                    const T *BNF_RESTRICT g3 = g2 + lddy;
                    const T *BNF_RESTRICT x0 = x + i * ldx + c0;
                    const T *BNF_RESTRICT x1 = x0 + ldx,
                                          *BNF_RESTRICT x2 = x1 + ldx;
                    const T *BNF_RESTRICT x3 = x2 + ldx;
                    if (!relu) {
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C u0 = LOAD(g0[j]), u1 = LOAD(g1[j]);
                            C u2 = LOAD(g2[j]), u3 = LOAD(g3[j]);
                            fs[j] += (u0 + u1) + (u2 + u3);
                            fq[j] += (u0 * (LOAD(x0[j]) - mh[j]) +
                                      u1 * (LOAD(x1[j]) - mh[j])) +
                                     (u2 * (LOAD(x2[j]) - mh[j]) +
                                      u3 * (LOAD(x3[j]) - mh[j]));
                        }
                    } else {
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C d0 = LOAD(x0[j]) - mh[j],
                              d1 = LOAD(x1[j]) - mh[j];
                            C d2 = LOAD(x2[j]) - mh[j],
                              d3 = LOAD(x3[j]) - mh[j];
                            C u0 = BNF_GATE(LOAD(g0[j]), d0 * ra[j] + rb[j],
                                            RELU_MIN);
                            C u1 = BNF_GATE(LOAD(g1[j]), d1 * ra[j] + rb[j],
                                            RELU_MIN);
                            C u2 = BNF_GATE(LOAD(g2[j]), d2 * ra[j] + rb[j],
                                            RELU_MIN);
                            C u3 = BNF_GATE(LOAD(g3[j]), d3 * ra[j] + rb[j],
                                            RELU_MIN);
                            fs[j] += (u0 + u1) + (u2 + u3);
                            fq[j] += (u0 * d0 + u1 * d1) + (u2 * d2 + u3 * d3);
                        }
                    }
                }
                for (; i < f1; i++) {
                    const T *BNF_RESTRICT g0 = dy + i * lddy + c0;
                    const T *BNF_RESTRICT xa = x + i * ldx + c0;
                    if (!relu) {
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C u0 = LOAD(g0[j]);
                            fs[j] += u0;
                            fq[j] += u0 * (LOAD(xa[j]) - mh[j]);
                        }
                    } else {
                        for (ptrdiff_t j = 0; j < tc; j++) {
                            C d = LOAD(xa[j]) - mh[j];
                            C u0 = BNF_GATE(LOAD(g0[j]), d * ra[j] + rb[j],
                                            RELU_MIN);
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
            if (!HILO) { /* float64: compensated */
                for (ptrdiff_t j = 0; j < tc; j++) {
                    double es, eq;
                    ts[j] = bnf_two_sum(ts[j], bs[j], &es);
                    tq[j] = bnf_two_sum(tq[j], bq[j], &eq);
                    gs[j] += es;
                    gq[j] += eq;
                }
                if (r1 == m)
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        ts[j] += gs[j];
                        tq[j] += gq[j];
                    }
                continue;
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

/* rows_bwd_reduce of the fused residual with the ReLU, in the same pass
   as its gate: g = dy where the forward's (x - mh) * a + b + z > 0, else
   0, written to gw (dresidual, and the dy of the apply pass that follows),
   and the column sums of g and g * (x - mean) as rows_bwd_reduce's (the
   same blocks and totals).  One pass reading dy, x, z and writing g, where
   a gate pass then the reduce would read g and x again. */
int NAME(rows_bwd_reduce_res)(const T *BNF_RESTRICT dy, ptrdiff_t lddy,
                              const T *BNF_RESTRICT x, ptrdiff_t ldx,
                              const T *BNF_RESTRICT z, ptrdiff_t ldz,
                              ptrdiff_t m, ptrdiff_t c, NAME(bnf_coefs) cf,
                              T *BNF_RESTRICT gw, ptrdiff_t ldg,
                              double *BNF_RESTRICT sum_dy,
                              double *BNF_RESTRICT sum_dyxmu)
{
    ptrdiff_t tile = bnf_min(c, BNF_TILE_COLS), t1 = tile > 0 ? tile : 1;
    double *work = malloc(4 * (size_t)t1 * sizeof(double) +
                          2 * (size_t)t1 * sizeof(C));
    if (work == NULL)
        return BNF_ENOMEM;
    double *BNF_RESTRICT bs = work, *BNF_RESTRICT bq = work + tile;
    double *BNF_RESTRICT gs = work + 2 * tile,
                         *BNF_RESTRICT gq = work + 3 * tile;
    C *BNF_RESTRICT fs = (C *)(work + 4 * t1), *BNF_RESTRICT fq = fs + t1;

    int wide = tile * (ptrdiff_t)sizeof(T) >= BNF_WIDE_ROW;
    ptrdiff_t flush = HILO ? BNF_FLUSH : (wide ? 4 : 2) * BNF_FLUSH;
    for (ptrdiff_t c0 = 0; c0 < c; c0 += tile) {
        ptrdiff_t tc = bnf_min(tile, c - c0);
        const C *BNF_RESTRICT mh = cf.mh + c0;
        const C *BNF_RESTRICT ml = HILO ? cf.ml + c0 : NULL;
        const C *BNF_RESTRICT ra = cf.a + c0;
        const C *BNF_RESTRICT rb = cf.b + c0;
        double *BNF_RESTRICT ts = sum_dy + c0;
        double *BNF_RESTRICT tq = sum_dyxmu + c0;
        for (ptrdiff_t j = 0; j < tc; j++) {
            ts[j] = tq[j] = 0.0;
            gs[j] = gq[j] = 0.0;
        }
        ptrdiff_t blocks = 0;
        for (ptrdiff_t r0 = 0; r0 < m; r0 += BNF_SUM_ROWS) {
            ptrdiff_t r1 = bnf_min(r0 + BNF_SUM_ROWS, m);
            for (ptrdiff_t j = 0; j < tc; j++)
                bs[j] = bq[j] = 0.0;
            for (ptrdiff_t f0 = r0; f0 < r1; f0 += flush) {
                ptrdiff_t f1 = bnf_min(f0 + flush, r1);
                for (ptrdiff_t j = 0; j < tc; j++)
                    fs[j] = fq[j] = 0;
                ptrdiff_t i = f0;
                /* wide rows two at a time (four, as rows_bwd_reduce,
                   need 16 pointers: GCC reloaded them from the stack in
                   the inner loop, the hottest instructions in perf) */
                for (; wide && i + 2 <= f1; i += 2) {
                    const T *BNF_RESTRICT g0 = dy + i * lddy + c0;
                    const T *BNF_RESTRICT g1 = g0 + lddy;
                    const T *BNF_RESTRICT x0 = x + i * ldx + c0;
                    const T *BNF_RESTRICT x1 = x0 + ldx;
                    const T *BNF_RESTRICT z0 = z + i * ldz + c0;
                    const T *BNF_RESTRICT z1 = z0 + ldz;
                    T *BNF_RESTRICT w0 = gw + i * ldg + c0;
                    T *BNF_RESTRICT w1 = w0 + ldg;
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        C d0 = LOAD(x0[j]) - mh[j], d1 = LOAD(x1[j]) - mh[j];
                        C u0 = BNF_GATE(LOAD(g0[j]),
                                        d0 * ra[j] + rb[j] + LOAD(z0[j]),
                                        RELU_MIN);
                        C u1 = BNF_GATE(LOAD(g1[j]),
                                        d1 * ra[j] + rb[j] + LOAD(z1[j]),
                                        RELU_MIN);
                        w0[j] = STORE(u0);
                        w1[j] = STORE(u1);
                        fs[j] += u0 + u1;
                        fq[j] += u0 * d0 + u1 * d1;
                    }
                }
                for (; i < f1; i++) {
                    const T *BNF_RESTRICT g0 = dy + i * lddy + c0;
                    const T *BNF_RESTRICT xa = x + i * ldx + c0;
                    const T *BNF_RESTRICT za = z + i * ldz + c0;
                    T *BNF_RESTRICT w0 = gw + i * ldg + c0;
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        C d = LOAD(xa[j]) - mh[j];
                        C u0 = BNF_GATE(LOAD(g0[j]),
                                        d * ra[j] + rb[j] + LOAD(za[j]),
                                        RELU_MIN);
                        w0[j] = STORE(u0);
                        fs[j] += u0;
                        fq[j] += u0 * d;
                    }
                }
                /* sum g * (x - mean) = sum g * (x - mh) - ml * sum g */
                for (ptrdiff_t j = 0; j < tc; j++) {
                    bs[j] += (double)fs[j];
                    bq[j] += (double)fq[j] -
                             (HILO ? (double)ml[j] * (double)fs[j] : 0.0);
                }
            }
            if (!HILO) { /* float64: compensated */
                for (ptrdiff_t j = 0; j < tc; j++) {
                    double es, eq;
                    ts[j] = bnf_two_sum(ts[j], bs[j], &es);
                    tq[j] = bnf_two_sum(tq[j], bq[j], &eq);
                    gs[j] += es;
                    gq[j] += eq;
                }
                if (r1 == m)
                    for (ptrdiff_t j = 0; j < tc; j++) {
                        ts[j] += gs[j];
                        tq[j] += gq[j];
                    }
                continue;
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
#define BNF_BWD1(gv, xv, j)                                                   \
    (a[j] * LOAD(gv) +                                                        \
     kx[j] * (XMU(LOAD(xv), mh[j], HILO ? ml[j] : 0) * is[j]) + k0[j])

/* with relu: dy where the forward's (x - mh) * a + b > 0 */
#define BNF_GR1(gv, xv, j)                                                    \
    BNF_GATE(LOAD(gv), (LOAD(xv) - mh[j]) * a[j] + rb[j], RELU_MIN)
#define BNF_BWDR1(gv, xv, j)                                                  \
    (a[j] * BNF_GR1(gv, xv, j) +                                              \
     kx[j] * (XMU(LOAD(xv), mh[j], HILO ? ml[j] : 0) * is[j]) + k0[j])

/* frozen statistics (k_xhat NULL): dx = a * g, x read for relu's mask
   only (no 0 * xhat term: an Inf or NaN x leaves dx finite) */
#define BNF_FRZ1(gv, xv, j) ((void)(xv), a[j] * LOAD(gv))
#define BNF_FRZR1(gv, xv, j) (a[j] * BNF_GR1(gv, xv, j))

/* rows [i, m) of dx with element expression E: wide rows two at a time
   (BNF_WIDE_ROW; four need more registers than x86-64 has for their 12
   pointers and the 6 coefficients), then one at a time */
#define BNF_BWD_ROWS(E)                                                       \
    do {                                                                      \
        if (c * (ptrdiff_t)sizeof(T) >= BNF_WIDE_ROW) {                       \
            for (; i + 2 <= m; i += 2) {                                      \
                const T *BNF_RESTRICT g0 = dy + i * lddy,                     \
                                      *BNF_RESTRICT g1 = g0 + lddy;           \
                const T *BNF_RESTRICT x0 = x + i * ldx,                       \
                                      *BNF_RESTRICT x1 = x0 + ldx;            \
                T *BNF_RESTRICT o0 = dx + i * lddx,                           \
                                *BNF_RESTRICT o1 = o0 + lddx;                 \
                for (ptrdiff_t j = 0; j < c; j++) {                           \
                    o0[j] = STORE(E(g0[j], x0[j], j));                        \
                    o1[j] = STORE(E(g1[j], x1[j], j));                        \
                }                                                             \
            }                                                                 \
        }                                                                     \
        for (; i < m; i++) {                                                  \
            const T *BNF_RESTRICT g0 = dy + i * lddy;                         \
            const T *BNF_RESTRICT x0 = x + i * ldx;                           \
            T *BNF_RESTRICT o0 = dx + i * lddx;                               \
            for (ptrdiff_t j = 0; j < c; j++)                                 \
                o0[j] = STORE(E(g0[j], x0[j], j));                            \
        }                                                                     \
    } while (0)

void NAME(rows_bwd_apply)(const T *BNF_RESTRICT dy, ptrdiff_t lddy,
                          const T *BNF_RESTRICT x, ptrdiff_t ldx, ptrdiff_t m,
                          ptrdiff_t c, NAME(bnf_coefs) cf, int relu,
                          T *BNF_RESTRICT dx, ptrdiff_t lddx)
{
    const C *BNF_RESTRICT mh = cf.mh, *BNF_RESTRICT ml = cf.ml;
    const C *BNF_RESTRICT a = cf.a, *BNF_RESTRICT is = cf.is,
                          *BNF_RESTRICT rb = cf.b;
    const C *BNF_RESTRICT kx = cf.k_xhat, *BNF_RESTRICT k0 = cf.k_0;
    ptrdiff_t i = 0;
    if (kx == NULL) {
        if (!relu)
            BNF_BWD_ROWS(BNF_FRZ1);
        else
            BNF_BWD_ROWS(BNF_FRZR1);
    } else if (!relu) {
        BNF_BWD_ROWS(BNF_BWD1);
    } else {
        BNF_BWD_ROWS(BNF_BWDR1);
    }
}

#undef BNF_APPLY1
#undef BNF_RELU1
#undef BNF_BWD1
#undef BNF_BWDR1
#undef BNF_GR1
#undef BNF_FRZ1
#undef BNF_FRZR1
#undef BNF_BWD_ROWS
#undef BNF_WIDE_ROW
#undef BNF_STATS_ROWS4
