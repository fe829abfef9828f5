/* Lane accumulators along contiguous runs, shared by the along-runs and
   layer norm templates (included by them, so instantiated per dtype).
   Sums go into LANES independent lanes of the compute type C (vectorized,
   fixed order, no reassociation by the compiler), each lane flushed into a
   double lane every BNF_FLUSH of its elements (instantiate.h), and the
   double lanes are combined by a fixed pairwise tree.  The order of every
   operation is fixed in the source, so every SIMD level gives bitwise the
   same sums. */

#define LANES BNF_LANES_OF(C)

/* Before a lane loop in C.  float: none, so that GCC unrolls the loop and
   its SLP pass keeps the 32 lanes in four vector registers (with the loop
   kept, the lanes lived on the stack and every step waited on a store
   forwarding: float32 NCHW statistics 1.21x faster without it).  double:
   BNF_LANE_LOOP (without it the double lanes ran 1.8x slower). */
#if HILO
#define LANE_LOOP
#else
#define LANE_LOOP BNF_LANE_LOOP
#endif

/* The C lanes are flushed into DLANES double lanes: double lane l gets
   C lanes l, l + DLANES, ... added in that order (for double data, with
   one flush per block, that is the first level of the pairwise tree the
   16 lanes always had, so float64 sums are unchanged).  Eight doubles are
   zeroed with two vector stores; 32 of them took a `rep stos` per block,
   a quarter of the time of a layer norm row of 256. */
#define DLANES 8

/* Sum of n lanes (a power of two), pairwise in a fixed order. */
BNF_INLINE double NAME(lanes_sum)(double *a, int n)
{
    for (int w = n / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++)
            a[l] += a[l + w];
    return a[0];
}

/* a[0:DLANES] += the C lanes f[0:LANES], as above. */
BNF_INLINE void NAME(lanes_flush)(double *BNF_RESTRICT a,
                                  const C *BNF_RESTRICT f)
{
    for (int l = 0; l < DLANES; l++) {
        double v = (double)f[l];
        for (int k = DLANES; k < LANES; k += DLANES)
            v += (double)f[l + k];
        a[l] += v;
    }
}

/*
 * float64 (C double: no narrower lanes to flush): the sums were recursive
 * over a whole block (256 elements a lane, and up to 4096 in one double
 * lane for runs shorter than the lanes), 10-300x the error of NumPy's
 * pairwise sums on repeated values (a constant dout, a broadcast batch),
 * whose roundings do not cancel.  Now each lane adds BNF_FLUSH (16) pairs
 * of elements (PAIRS) before a flush; the double lanes take at most
 * COLLAPSE (4) flushes, or ~BNF_FLUSH tail elements of short runs (which
 * rotate over the double lanes), before they are summed pairwise into a
 * compensated total hi + lo (lanes_collapse, bnf_two_sum).  A block's sum
 * is then, against the exact sum, within about (16 + 1 + 4 + 3 + 2) * u *
 * (sum of |terms|) (the lane, the pair, the flushes, the tree of 8 double
 * lanes, the compensated total), whatever its length; NumPy's pairwise
 * sum: (16 + 3 + log2(n / 128)) * u.  On repeated terms the measured
 * error is NumPy's (tests/test_accuracy.py), at no cost in time (the
 * pairs halve the lanes' loads and stores).  float32 data is unchanged:
 * its C lanes already flush every BNF_FLUSH elements into double. */
#if HILO
#define COMPENSATED 0
#else
#define COMPENSATED 1
#endif
/* float64: two elements a lane per step (a pair, then the lane), for
   BNF_FLUSH pairs between flushes: the same depth as BNF_FLUSH elements,
   half the flushes and lane updates */
#define PAIRS (COMPENSATED ? 2 : 1)
/* flushes (of BNF_FLUSH elements a lane) between two collapses; `pend`
   counts a flush as DLANES * BNF_FLUSH / COLLAPSE, a tail element as 1,
   and a collapse comes at DLANES * BNF_FLUSH: at most COLLAPSE flushes
   or ~BNF_FLUSH tail elements in a double lane */
#define COLLAPSE 4

/* The double lanes a[0:DLANES] summed pairwise into hi + lo (TwoSum), and
   zeroed. */
BNF_INLINE void NAME(lanes_collapse)(double *BNF_RESTRICT a, double *hi,
                                     double *lo)
{
    double e, v = NAME(lanes_sum)(a, DLANES);
    for (int l = 0; l < DLANES; l++)
        a[l] = 0.0;
    *hi = bnf_two_sum(*hi, v, &e);
    *lo += e;
}

/* The C lanes fs, fq into the double lanes as, aq (lanes_flush); with
   COMPENSATED, a flush of full C lanes (full) counts 1 / COLLAPSE of the
   DLANES * BNF_FLUSH elements in *pend after which the double lanes go into
   the compensated totals sh + sl, qh + ql (lanes_collapse). */
BNF_INLINE void NAME(lanes_flush_both)(double *BNF_RESTRICT as,
                                       double *BNF_RESTRICT aq,
                                       const C *BNF_RESTRICT fs,
                                       const C *BNF_RESTRICT fq, int full,
                                       ptrdiff_t *pend, double *sh, double *sl,
                                       double *qh, double *ql)
{
    NAME(lanes_flush)(as, fs);
    NAME(lanes_flush)(aq, fq);
    if (COMPENSATED && full &&
        (*pend += DLANES * BNF_FLUSH / COLLAPSE) >= DLANES * BNF_FLUSH) {
        NAME(lanes_collapse)(as, sh, sl);
        NAME(lanes_collapse)(aq, qh, ql);
        *pend = 0;
    }
}

/* A block's two sums from the double lanes as and aq: summed pairwise, or
   (COMPENSATED) collapsed into the totals sh + sl and qh + ql first. */
BNF_INLINE void NAME(lanes_totals)(double *BNF_RESTRICT as,
                                   double *BNF_RESTRICT aq, double sh,
                                   double sl, double qh, double ql, double *s,
                                   double *q)
{
    if (COMPENSATED) {
        NAME(lanes_collapse)(as, &sh, &sl);
        NAME(lanes_collapse)(aq, &qh, &ql);
        *s = sh + sl;
        *q = qh + ql;
    } else {
        *s = NAME(lanes_sum)(as, DLANES);
        *q = NAME(lanes_sum)(aq, DLANES);
    }
}

/*
 * The block sums below take a block of nr runs of len elements, run r at
 * p + r*st (nr == 1: one piece of a run), so that short runs of one
 * channel (small images) are summed as one block: one merge per block,
 * not per run.  Element e of a run goes into C lane e % LANES, the C
 * lanes are flushed into the double ones every BNF_FLUSH of their elements
 * and at the end of each run; a run's last len % LANES elements go
 * straight into double lanes 0, 1, ... (mod DLANES), so that the C lanes
 * are indexed by constants only and stay in registers.
 */

/* The sums of block_sums_centered in double: for a block whose squares
   overflow C (float32 values of a spread above ~1e19), or that holds an
   Inf or NaN. */
BNF_INLINE void NAME(block_sums_wide)(const T *BNF_RESTRICT p, ptrdiff_t nr,
                                      ptrdiff_t st, ptrdiff_t len, double c,
                                      double *s, double *q)
{
    double as[LANES] = {0}, aq[LANES] = {0};
    for (ptrdiff_t r = 0; r < nr; r++) {
        const T *BNF_RESTRICT pr = p + r * st;
        ptrdiff_t e = 0;
        for (; e + LANES <= len; e += LANES) {
            BNF_LANE_LOOP
            for (int l = 0; l < LANES; l++) {
                double d = (double)LOAD(pr[e + l]) - c;
                as[l] += d;
                aq[l] += d * d;
            }
        }
        for (int l = 0; l < len - e; l++) {
            double d = (double)LOAD(pr[e + l]) - c;
            as[l] += d;
            aq[l] += d * d;
        }
    }
    *s = NAME(lanes_sum)(as, LANES);
    *q = NAME(lanes_sum)(aq, LANES);
}

/* Sums of d = p[e] - c and d*d over a block; c must be a C value.  In C,
   flushed into double; in double when that overflows. */
BNF_INLINE void NAME(block_sums_centered)(const T *BNF_RESTRICT p,
                                          ptrdiff_t nr, ptrdiff_t st,
                                          ptrdiff_t len, C c, double *s,
                                          double *q)
{
    double as[DLANES] = {0}, aq[DLANES] = {0};
    double sh = 0.0, sl = 0.0, qh = 0.0, ql = 0.0; /* COMPENSATED */
    ptrdiff_t rot = 0, pend = 0; /* the tails' first lane, their count */
    for (ptrdiff_t r = 0; r < nr; r++) {
        const T *BNF_RESTRICT pr = p + r * st;
        ptrdiff_t e = 0;
        while (e < len) {
            C fs[LANES] = {0}, fq[LANES] = {0};
            ptrdiff_t end = bnf_min(len, e + PAIRS * BNF_FLUSH * LANES);
            ptrdiff_t e0 = e;
            for (; PAIRS == 2 && e + 2 * LANES <= end; e += 2 * LANES) {
                LANE_LOOP
                for (int l = 0; l < LANES; l++) {
                    C d0 = LOAD(pr[e + l]) - c;
                    C d1 = LOAD(pr[e + LANES + l]) - c;
                    fs[l] += d0 + d1;
                    fq[l] += d0 * d0 + d1 * d1;
                }
            }
            for (; e + LANES <= end; e += LANES) {
                LANE_LOOP
                for (int l = 0; l < LANES; l++) {
                    C d = LOAD(pr[e + l]) - c;
                    fs[l] += d;
                    fq[l] += d * d;
                }
            }
            NAME(lanes_flush_both)(as, aq, fs, fq, e > e0, &pend, &sh, &sl,
                                   &qh, &ql);
            if (end == len && e < len) { /* the tail: into the double lanes */
                for (int l = 0; l < len - e; l++) {
                    C d = LOAD(pr[e + l]) - c;
                    as[(rot + l) % DLANES] += (double)d;
                    aq[(rot + l) % DLANES] += (double)(d * d);
                }
                if (COMPENSATED) {
                    rot = (rot + len - e) % DLANES;
                    pend += len - e;
                }
                e = len;
            }
        }
        if (COMPENSATED && pend >= DLANES * BNF_FLUSH) {
            NAME(lanes_collapse)(as, &sh, &sl);
            NAME(lanes_collapse)(aq, &qh, &ql);
            pend = 0;
        }
    }
    NAME(lanes_totals)(as, aq, sh, sl, qh, ql, s, q);
    if (HILO && !bnf_isfinite(*q))
        NAME(block_sums_wide)(p, nr, st, len, (double)c, s, q);
}

/* Sums of g[e] and g[e] * (p[e] - mean) over a block of nr runs (g's at
   stride gst), mean = mh + ml; with relu, g[e] counts only where the
   forward's (p[e] - mh) * ra + rb > 0 (the same expression in C as the
   forward's, rb = beta - ml * a).  The lanes sum g * (p - mh); the ml part
   is taken off in double at the end. */
BNF_INLINE void NAME(block_sums_bwd)(const T *BNF_RESTRICT g, ptrdiff_t gst,
                                     const T *BNF_RESTRICT p, ptrdiff_t st,
                                     ptrdiff_t nr, ptrdiff_t len, C mh, C ml,
                                     int relu, C ra, C rb, double *s,
                                     double *q)
{
    double as[DLANES] = {0}, aq[DLANES] = {0};
    double sh = 0.0, sl = 0.0, qh = 0.0, ql = 0.0; /* COMPENSATED */
    ptrdiff_t rot = 0, pend = 0;                   /* as block_sums_centered */
    for (ptrdiff_t r = 0; r < nr; r++) {
        const T *BNF_RESTRICT gr = g + r * gst, *BNF_RESTRICT pr = p + r * st;
        ptrdiff_t e = 0;
        while (e < len) {
            C fs[LANES] = {0}, fq[LANES] = {0};
            ptrdiff_t end = bnf_min(len, e + PAIRS * BNF_FLUSH * LANES);
            ptrdiff_t e0 = e;
            if (!relu) {
                for (; PAIRS == 2 && e + 2 * LANES <= end; e += 2 * LANES) {
                    LANE_LOOP
                    for (int l = 0; l < LANES; l++) {
                        C g0 = LOAD(gr[e + l]), g1 = LOAD(gr[e + LANES + l]);
                        fs[l] += g0 + g1;
                        fq[l] += g0 * (LOAD(pr[e + l]) - mh) +
                                 g1 * (LOAD(pr[e + LANES + l]) - mh);
                    }
                }
                for (; e + LANES <= end; e += LANES) {
                    LANE_LOOP
                    for (int l = 0; l < LANES; l++) {
                        C gl = LOAD(gr[e + l]);
                        fs[l] += gl;
                        fq[l] += gl * (LOAD(pr[e + l]) - mh);
                    }
                }
            } else {
                for (; PAIRS == 2 && e + 2 * LANES <= end; e += 2 * LANES) {
                    LANE_LOOP
                    for (int l = 0; l < LANES; l++) {
                        C d0 = LOAD(pr[e + l]) - mh;
                        C d1 = LOAD(pr[e + LANES + l]) - mh;
                        C g0 = BNF_GATE(LOAD(gr[e + l]), d0 * ra + rb,
                                        RELU_MIN);
                        C g1 = BNF_GATE(LOAD(gr[e + LANES + l]), d1 * ra + rb,
                                        RELU_MIN);
                        fs[l] += g0 + g1;
                        fq[l] += g0 * d0 + g1 * d1;
                    }
                }
                for (; e + LANES <= end; e += LANES) {
                    LANE_LOOP
                    for (int l = 0; l < LANES; l++) {
                        C d = LOAD(pr[e + l]) - mh;
                        C gl = BNF_GATE(LOAD(gr[e + l]), d * ra + rb,
                                        RELU_MIN);
                        fs[l] += gl;
                        fq[l] += gl * d;
                    }
                }
            }
            NAME(lanes_flush_both)(as, aq, fs, fq, e > e0, &pend, &sh, &sl,
                                   &qh, &ql);
            if (end == len && e < len) { /* the tail: into the double lanes */
                for (int l = 0; l < len - e; l++) {
                    C d = LOAD(pr[e + l]) - mh;
                    C gl = LOAD(gr[e + l]) *
                           (C)(!relu || d * ra + rb > RELU_MIN);
                    as[(rot + l) % DLANES] += (double)gl;
                    aq[(rot + l) % DLANES] += (double)(gl * d);
                }
                if (COMPENSATED) {
                    rot = (rot + len - e) % DLANES;
                    pend += len - e;
                }
                e = len;
            }
        }
        if (COMPENSATED && pend >= DLANES * BNF_FLUSH) {
            NAME(lanes_collapse)(as, &sh, &sl);
            NAME(lanes_collapse)(aq, &qh, &ql);
            pend = 0;
        }
    }
    NAME(lanes_totals)(as, aq, sh, sl, qh, ql, s, q);
    if (HILO) /* (COMPENSATED is double only: ml is 0 there) */
        *q -= (double)ml * *s;
}

/* Sums of g = dy * gamma and g * (x - mean) over a block of a row (layer
   norm: gamma, in C, varies along the row); the ml part is taken off in
   double at the end, as in block_sums_bwd. */
BNF_INLINE void NAME(block_sums_ln)(const T *BNF_RESTRICT dy,
                                    const T *BNF_RESTRICT p,
                                    const C *BNF_RESTRICT gamma, ptrdiff_t nb,
                                    C mh, C ml, double *s, double *q)
{
    double as[DLANES] = {0}, aq[DLANES] = {0};
    double sh = 0.0, sl = 0.0, qh = 0.0, ql = 0.0; /* COMPENSATED */
    int nfl = 0;
    ptrdiff_t e = 0;
    while (e < nb) {
        C fs[LANES] = {0}, fq[LANES] = {0};
        ptrdiff_t end = bnf_min(nb, e + PAIRS * BNF_FLUSH * LANES);
        for (; PAIRS == 2 && e + 2 * LANES <= end; e += 2 * LANES) {
            LANE_LOOP
            for (int l = 0; l < LANES; l++) {
                C g0 = LOAD(dy[e + l]) * gamma[e + l];
                C g1 = LOAD(dy[e + LANES + l]) * gamma[e + LANES + l];
                fs[l] += g0 + g1;
                fq[l] += g0 * (LOAD(p[e + l]) - mh) +
                         g1 * (LOAD(p[e + LANES + l]) - mh);
            }
        }
        for (; e + LANES <= end; e += LANES) {
            LANE_LOOP
            for (int l = 0; l < LANES; l++) {
                C gl = LOAD(dy[e + l]) * gamma[e + l];
                fs[l] += gl;
                fq[l] += gl * (LOAD(p[e + l]) - mh);
            }
        }
        NAME(lanes_flush)(as, fs);
        NAME(lanes_flush)(aq, fq);
        if (COMPENSATED && ++nfl == COLLAPSE) {
            NAME(lanes_collapse)(as, &sh, &sl);
            NAME(lanes_collapse)(aq, &qh, &ql);
            nfl = 0;
        }
        if (end == nb && e < nb) { /* the tail: into the double lanes */
            for (int l = 0; l < nb - e; l++) {
                C gl = LOAD(dy[e + l]) * gamma[e + l];
                as[l % DLANES] += (double)gl;
                aq[l % DLANES] += (double)(gl * (LOAD(p[e + l]) - mh));
            }
            e = nb;
        }
    }
    if (COMPENSATED) { /* the tail (< LANES elements) */
        NAME(lanes_collapse)(as, &sh, &sl);
        NAME(lanes_collapse)(aq, &qh, &ql);
        *s = sh + sl;
        *q = qh + ql;
        return;
    }
    *s = NAME(lanes_sum)(as, DLANES);
    *q = NAME(lanes_sum)(aq, DLANES) - (HILO ? (double)ml * *s : 0.0);
}

/* RMS norm: the sum of x*x over a block of a row (w NULL), or of
   (dy * w) * x (w: gamma in C, the backward's sum B), in the lanes of
   block_sums_ln (C lanes flushed every BNF_FLUSH elements into double
   lanes; float64: pairs and compensated totals).  A float32 sum that
   overflows C is left infinite: the callers tell the row from its
   result (extremes_tmpl.h). */
BNF_INLINE double NAME(block_sumsq)(const T *BNF_RESTRICT dy,
                                    const T *BNF_RESTRICT p,
                                    const C *BNF_RESTRICT w, ptrdiff_t nb)
{
    double aq[DLANES] = {0};
    double qh = 0.0, ql = 0.0; /* COMPENSATED */
    int nfl = 0;
    ptrdiff_t e = 0;
    while (e < nb) {
        C fq[LANES] = {0};
        ptrdiff_t end = bnf_min(nb, e + PAIRS * BNF_FLUSH * LANES);
        if (w == NULL) {
            for (; PAIRS == 2 && e + 2 * LANES <= end; e += 2 * LANES) {
                LANE_LOOP
                for (int l = 0; l < LANES; l++) {
                    C x0 = LOAD(p[e + l]), x1 = LOAD(p[e + LANES + l]);
                    fq[l] += x0 * x0 + x1 * x1;
                }
            }
            for (; e + LANES <= end; e += LANES) {
                LANE_LOOP
                for (int l = 0; l < LANES; l++) {
                    C x0 = LOAD(p[e + l]);
                    fq[l] += x0 * x0;
                }
            }
        } else {
            for (; PAIRS == 2 && e + 2 * LANES <= end; e += 2 * LANES) {
                LANE_LOOP
                for (int l = 0; l < LANES; l++) {
                    C g0 = LOAD(dy[e + l]) * w[e + l];
                    C g1 = LOAD(dy[e + LANES + l]) * w[e + LANES + l];
                    fq[l] += g0 * LOAD(p[e + l]) + g1 * LOAD(p[e + LANES + l]);
                }
            }
            for (; e + LANES <= end; e += LANES) {
                LANE_LOOP
                for (int l = 0; l < LANES; l++) {
                    C gl = LOAD(dy[e + l]) * w[e + l];
                    fq[l] += gl * LOAD(p[e + l]);
                }
            }
        }
        NAME(lanes_flush)(aq, fq);
        if (COMPENSATED && ++nfl == COLLAPSE) {
            NAME(lanes_collapse)(aq, &qh, &ql);
            nfl = 0;
        }
        if (end == nb && e < nb) { /* the tail: into the double lanes */
            for (int l = 0; l < nb - e; l++) {
                C x0 = LOAD(p[e + l]);
                C v = w == NULL ? x0 * x0 : (LOAD(dy[e + l]) * w[e + l]) * x0;
                aq[l % DLANES] += (double)v;
            }
            e = nb;
        }
    }
    if (COMPENSATED) {
        NAME(lanes_collapse)(aq, &qh, &ql);
        return qh + ql;
    }
    return NAME(lanes_sum)(aq, DLANES);
}

/*
 * Merge the moments of one block of nr runs of len elements (run r at
 * p + r*st; nr*len at most BNF_RUN_BLOCK, or nr == 1) into a running
 * (mu, m2) of `count` earlier elements (count 0: start afresh), all
 * relative to the shift k (a value of the data).  The block is summed
 * around a center c (a C value) and corrected (corrected two-pass): the
 * first block is centered on the shift k (a value of the data), later
 * ones on the running mean, and a block whose mean turns out further than
 * a standard deviation from its center is summed again around its mean,
 * while in cache (also a constant channel after a random one in a group
 * norm group: 10-45x the reference's error before); blocks merge with
 * Chan's formula in double.
 */
BNF_INLINE void NAME(block_moments)(const T *p, ptrdiff_t nr, ptrdiff_t st,
                                    ptrdiff_t len, double k, double count,
                                    double *mu, double *m2)
{
    double dnb = (double)nr * (double)len;
    /* the center: the running mean, or for the first block the shift k
       itself (a value of the data, so within a few standard deviations of
       the mean; when it is more than one away, the check below sums the
       block again around its mean: 1.3 passes on average for normal data
       instead of the 2 of a pass estimating the mean first) */
    double est = count == 0.0 ? 0.0 : *mu;
    C c = (C)(k + est);
    c = bnf_isfinite((double)c) ? c : (C)0;
    double s, q;
    NAME(block_sums_centered)(p, nr, st, len, c, &s, &q);
    double t = s / dnb;
    if (s * t > 0.5 * q) {
        /* the block's mean is more than a standard deviation from c (runs
           joining values of different means: a group norm group's
           channels, a layer norm row's features, a trend): the correction
           would cancel most of q.  Again around the block's mean, while
           the block is in cache; the error stays within twice the
           two-pass algorithm's. */
        C c2 = (C)((double)c + t);
        if (bnf_isfinite((double)c2)) {
            c = c2;
            NAME(block_sums_centered)(p, nr, st, len, c, &s, &q);
            t = s / dnb;
        }
    }
    double mb = ((double)c - k) + t;
    double qb = q - s * t;
    qb = qb < 0.0 ? 0.0 : qb;
    if (count == 0.0) {
        *mu = mb;
        *m2 = qb;
    } else {
        bnf_chan_merge(1, count, dnb, &mb, &qb, mu, m2);
    }
}

/* The moments of one run of len elements merged into (mu, m2) of count
   earlier elements, in blocks of BNF_RUN_BLOCK (block_moments). */
BNF_INLINE void NAME(run_moments)(const T *run, ptrdiff_t len, double k,
                                  double count, double *mu, double *m2)
{
    for (ptrdiff_t e0 = 0; e0 < len; e0 += BNF_RUN_BLOCK) {
        ptrdiff_t nb = bnf_min(BNF_RUN_BLOCK, len - e0);
        NAME(block_moments)(run + e0, 1, 0, nb, k, count, mu, m2);
        count += (double)nb;
    }
}

#undef LANES
#undef DLANES
#undef COMPENSATED
#undef COLLAPSE
#undef PAIRS
#undef LANE_LOOP
