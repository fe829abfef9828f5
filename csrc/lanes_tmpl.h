/* Lane accumulators along contiguous runs, shared by the along-runs and
   layer norm templates (included by them, so instantiated per dtype).
   Sums go into BNF_LANES independent lanes (vectorized, fixed order, no
   reassociation by the compiler) combined by a fixed pairwise tree. */

/* Sum of the lanes, pairwise in a fixed order. */
BNF_INLINE double NAME(lanes_sum)(double *a)
{
    for (int w = BNF_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++)
            a[l] += a[l + w];
    return a[0];
}

/* Sum of p[e] - k over a block, in the data's own precision: it only
   estimates the block mean, which the centered pass then corrects to first
   order (so float32 data skips the conversions here). */
BNF_INLINE double NAME(block_sum_shifted)(const T *restrict p, ptrdiff_t nb,
                                          double k)
{
    T a[BNF_LANES] = {0}, kt = (T)k;
    ptrdiff_t e = 0;
    for (; e + BNF_LANES <= nb; e += BNF_LANES)
        BNF_LANE_LOOP
        for (int l = 0; l < BNF_LANES; l++)
            a[l] += p[e + l] - kt;
    double sum = 0.0;
    for (int l = 0; l < BNF_LANES; l++)
        sum += (double)a[l];
    for (; e < nb; e++)
        sum += (double)p[e] - k;
    return sum;
}

/* Sums of d = p[e] - c and d*d over a block. */
BNF_INLINE void NAME(block_sums_centered)(const T *restrict p, ptrdiff_t nb,
                                             double c, double *s, double *q)
{
    double as[BNF_LANES] = {0}, aq[BNF_LANES] = {0};
    ptrdiff_t e = 0;
    for (; e + BNF_LANES <= nb; e += BNF_LANES)
        BNF_LANE_LOOP
        for (int l = 0; l < BNF_LANES; l++) {
            double d = (double)p[e + l] - c;
            as[l] += d;
            aq[l] += d * d;
        }
    for (; e < nb; e++) {
        double d = (double)p[e] - c;
        as[0] += d;
        aq[0] += d * d;
    }
    *s = NAME(lanes_sum)(as);
    *q = NAME(lanes_sum)(aq);
}

/* Sums of g[e] and g[e] * (p[e] - mu) over a block; with relu, g[e] counts
   only where the forward's (p[e] - mu) * ra + rb > 0. */
BNF_INLINE void NAME(block_sums_bwd)(const T *restrict g,
                                     const T *restrict p, ptrdiff_t nb,
                                     double mu, int relu, double ra,
                                     double rb, double *s, double *q)
{
    double as[BNF_LANES] = {0}, aq[BNF_LANES] = {0};
    ptrdiff_t e = 0;
    if (!relu) {
        for (; e + BNF_LANES <= nb; e += BNF_LANES)
            BNF_LANE_LOOP
            for (int l = 0; l < BNF_LANES; l++) {
                double gl = (double)g[e + l];
                as[l] += gl;
                aq[l] += gl * ((double)p[e + l] - mu);
            }
    } else {
        for (; e + BNF_LANES <= nb; e += BNF_LANES)
            BNF_LANE_LOOP
            for (int l = 0; l < BNF_LANES; l++) {
                double xm = (double)p[e + l] - mu, gv = (double)g[e + l];
                double gl = gv * (double)(xm * ra + rb > RELU_MIN);
                as[l] += gl;
                aq[l] += gl * xm;
            }
    }
    for (; e < nb; e++) {
        double xm = (double)p[e] - mu, gv = (double)g[e];
        double gl = gv * (double)(!relu || xm * ra + rb > RELU_MIN);
        as[0] += gl;
        aq[0] += gl * xm;
    }
    *s = NAME(lanes_sum)(as);
    *q = NAME(lanes_sum)(aq);
}

/* Sums of g = dy * gamma and g * (x - mu) over a block of a row (layer
   norm: gamma varies along the row). */
BNF_INLINE void NAME(block_sums_ln)(const T *restrict dy,
                                    const T *restrict p,
                                    const double *restrict gamma,
                                    ptrdiff_t nb, double mu, double *s,
                                    double *q)
{
    double as[BNF_LANES] = {0}, aq[BNF_LANES] = {0};
    ptrdiff_t e = 0;
    for (; e + BNF_LANES <= nb; e += BNF_LANES)
        BNF_LANE_LOOP
        for (int l = 0; l < BNF_LANES; l++) {
            double gl = (double)dy[e + l] * gamma[e + l];
            as[l] += gl;
            aq[l] += gl * ((double)p[e + l] - mu);
        }
    for (; e < nb; e++) {
        double gl = (double)dy[e] * gamma[e];
        as[0] += gl;
        aq[0] += gl * ((double)p[e] - mu);
    }
    *s = NAME(lanes_sum)(as);
    *q = NAME(lanes_sum)(aq);
}

/*
 * Merge the moments of one run of len elements into a running (mu, m2) of
 * `count` earlier elements (count 0: start afresh), all relative to the
 * shift k.  Blocks of at most BNF_RUN_BLOCK elements are summed around a
 * center c and corrected (corrected two-pass); the first block estimates c
 * from a pass over itself (from L1), later ones use the running mean, and
 * any block whose mean turns out further than a standard deviation from
 * its center is summed again around its mean (a constant channel after a
 * random one in a group norm group: 10-45x the reference's error before);
 * blocks merge with Chan's formula.
 */
BNF_INLINE void NAME(run_moments)(const T *run, ptrdiff_t len, double k,
                                  double count, double *mu, double *m2)
{
    for (ptrdiff_t e0 = 0; e0 < len; e0 += BNF_RUN_BLOCK) {
        ptrdiff_t nb = bnf_min(BNF_RUN_BLOCK, len - e0);
        const T *p = run + e0;
        double dnb = (double)nb;
        double est = count == 0.0 ? NAME(block_sum_shifted)(p, nb, k) / dnb
                                  : *mu;
        double c = k + est;
        c = bnf_isfinite(c) ? c : 0.0;
        double s, q;
        NAME(block_sums_centered)(p, nb, c, &s, &q);
        double t = s / dnb;
        if (s * t > 0.5 * q) {
            /* the block's mean is more than a standard deviation from c
               (runs joining values of different means: a group norm
               group's channels, a layer norm row's features, a trend):
               the correction would cancel most of q.  Again around the
               block's mean, while the block is in L1; the error stays
               within twice the two-pass algorithm's. */
            double c2 = c + t;
            if (bnf_isfinite(c2)) {
                c = c2;
                NAME(block_sums_centered)(p, nb, c, &s, &q);
                t = s / dnb;
            }
        }
        double mb = (c - k) + t;
        double qb = q - s * t;
        qb = qb < 0.0 ? 0.0 : qb;
        if (count == 0.0) {
            *mu = mb;
            *m2 = qb;
        } else {
            bnf_chan_merge(1, count, dnb, &mb, &qb, mu, m2);
        }
        count += dnb;
    }
}
