/* Template body of the batch norm entry points on an (n, d) panel;
   included by batchnorm.c once per dtype through instantiate.h (T the data
   type, NAME(f) the name).  These compose the kernels of stats.c and
   normalize.c and do the O(d) per-channel arithmetic in double. */

/* The family's kernels for a panel, on one thread: across rows when runs
   are single elements and channels are adjacent (s1 is then the row
   stride), along runs otherwise (correct for any panel). */
static int NAME(stats1)(const T *x, ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                        ptrdiff_t s1, ptrdiff_t s2, double *mean, double *m2)
{
    if (len == 1 && s2 == 1)
        return NAME(rows_stats)(x, n1, n2, s1, mean, m2);
    NAME(runs_stats)(x, n1, s1, n2, s2, len, mean, m2);
    return BNF_OK;
}

static int NAME(bwd_reduce1)(const T *dy, ptrdiff_t d1, ptrdiff_t d2,
                             const T *x, ptrdiff_t s1, ptrdiff_t s2,
                             ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                             const double *mean, const double *ra,
                             const double *rb, double *sum_dy,
                             double *sum_dyxmu)
{
    if (len == 1 && s2 == 1 && d2 == 1)
        return NAME(rows_bwd_reduce)(dy, d1, x, s1, n1, n2, mean, ra, rb,
                                     sum_dy, sum_dyxmu);
    NAME(runs_bwd_reduce)(dy, d1, d2, x, s1, s2, n1, n2, len, mean, ra, rb,
                          sum_dy, sum_dyxmu);
    return BNF_OK;
}

/*
 * Threads.  A reduction splits the channels when there are enough of them
 * (each thread owns its outputs; across rows in multiples of 16 columns),
 * else the runs (rows), whose partial results are merged in thread order.
 * Bitwise reproducible for a given thread count; across thread counts equal
 * to rounding (bitwise for runs split by channel: their work per channel
 * does not change; across rows a thread's column range changes the row
 * blocks).  The apply passes split the runs, else the channels.
 */
static int NAME(split_channels)(int nt, ptrdiff_t n2, ptrdiff_t len,
                                ptrdiff_t s2)
{
    return nt > 1 && (len == 1 && s2 == 1 ? n2 >= 16 * nt : n2 >= nt);
}

static int NAME(panel_stats)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                             ptrdiff_t len, ptrdiff_t s1, ptrdiff_t s2,
                             double *mean, double *m2)
{
    int nt = bnf_threads_for(n1 * n2 * len), rc = BNF_OK;
    if (NAME(split_channels)(nt, n2, len, s2)) {
        ptrdiff_t align = len == 1 && s2 == 1 ? 16 : 1;
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t j0, j1;
            bnf_part(n2, nt, t, align, &j0, &j1);
            if (NAME(stats1)(x + j0 * s2, n1, j1 - j0, len, s1, s2, mean + j0,
                             m2 + j0) != BNF_OK)
                rc = BNF_ENOMEM;
        }
        return rc;
    }
    if (nt < 2 || n1 < nt)
        return NAME(stats1)(x, n1, n2, len, s1, s2, mean, m2);
    double *part = malloc(2 * (size_t)nt * (size_t)n2 * sizeof(double));
    if (part == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        bnf_part(n1, nt, t, 1, &i0, &i1);
        if (NAME(stats1)(x + i0 * s1, i1 - i0, n2, len, s1, s2,
                         part + 2 * t * n2, part + (2 * t + 1) * n2) != BNF_OK)
            rc = BNF_ENOMEM;
    }
    if (rc == BNF_OK) {
        ptrdiff_t i0, i1;
        bnf_part(n1, nt, 0, 1, &i0, &i1);
        double na = (double)(i1 - i0) * (double)len;
        memcpy(mean, part, (size_t)n2 * sizeof(double));
        memcpy(m2, part + n2, (size_t)n2 * sizeof(double));
        for (int t = 1; t < nt; t++) {
            bnf_part(n1, nt, t, 1, &i0, &i1);
            double nb = (double)(i1 - i0) * (double)len;
            bnf_chan_merge(n2, na, nb, part + 2 * t * n2,
                           part + (2 * t + 1) * n2, mean, m2);
            na += nb;
        }
    }
    free(part);
    return rc;
}

static int NAME(panel_bwd_reduce)(const T *dy, ptrdiff_t d1, ptrdiff_t d2,
                                  const T *x, ptrdiff_t s1, ptrdiff_t s2,
                                  ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                                  const double *mean, const double *ra,
                                  const double *rb, double *sum_dy,
                                  double *sum_dyxmu)
{
    int nt = bnf_threads_for(n1 * n2 * len), rc = BNF_OK;
    if (NAME(split_channels)(nt, n2, len, s2)) {
        ptrdiff_t align = len == 1 && s2 == 1 ? 16 : 1;
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t j0, j1;
            bnf_part(n2, nt, t, align, &j0, &j1);
            if (NAME(bwd_reduce1)(dy + j0 * d2, d1, d2, x + j0 * s2, s1, s2,
                                  n1, j1 - j0, len, mean + j0,
                                  ra ? ra + j0 : NULL, rb ? rb + j0 : NULL,
                                  sum_dy + j0, sum_dyxmu + j0) != BNF_OK)
                rc = BNF_ENOMEM;
        }
        return rc;
    }
    if (nt < 2 || n1 < nt)
        return NAME(bwd_reduce1)(dy, d1, d2, x, s1, s2, n1, n2, len, mean, ra,
                                 rb, sum_dy, sum_dyxmu);
    double *part = malloc(2 * (size_t)nt * (size_t)n2 * sizeof(double));
    if (part == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        bnf_part(n1, nt, t, 1, &i0, &i1);
        if (NAME(bwd_reduce1)(dy + i0 * d1, d1, d2, x + i0 * s1, s1, s2,
                              i1 - i0, n2, len, mean, ra, rb,
                              part + 2 * t * n2,
                              part + (2 * t + 1) * n2) != BNF_OK)
            rc = BNF_ENOMEM;
    }
    for (ptrdiff_t j = 0; j < n2; j++) {
        sum_dy[j] = sum_dyxmu[j] = 0.0;
        for (int t = 0; t < nt; t++) {
            sum_dy[j] += part[2 * t * n2 + j];
            sum_dyxmu[j] += part[(2 * t + 1) * n2 + j];
        }
    }
    free(part);
    return rc;
}

static void NAME(apply1)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                         ptrdiff_t len, ptrdiff_t s1, ptrdiff_t s2,
                         const double *mean, const double *scale,
                         const double *shift, T *y, ptrdiff_t t1,
                         ptrdiff_t t2, int relu)
{
    if (len == 1 && s2 == 1 && t2 == 1)
        NAME(rows_apply)(x, n1, n2, s1, mean, scale, shift, y, t1, relu);
    else
        NAME(runs_apply)(x, n1, s1, n2, s2, len, mean, scale, shift, y, t1,
                         t2, relu);
}

static void NAME(panel_apply)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                              ptrdiff_t len, ptrdiff_t s1, ptrdiff_t s2,
                              const double *mean, const double *scale,
                              const double *shift, T *y, ptrdiff_t t1,
                              ptrdiff_t t2, int relu)
{
    int nt = bnf_threads_for(n1 * n2 * len);
    if (nt > 1 && n1 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t i0, i1;
            bnf_part(n1, nt, t, 1, &i0, &i1);
            NAME(apply1)(x + i0 * s1, i1 - i0, n2, len, s1, s2, mean, scale,
                         shift, y + i0 * t1, t1, t2, relu);
        }
    } else if (nt > 1 && n2 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t j0, j1;
            bnf_part(n2, nt, t, 1, &j0, &j1);
            NAME(apply1)(x + j0 * s2, n1, j1 - j0, len, s1, s2, mean + j0,
                         scale + j0, shift + j0, y + j0 * t2, t1, t2, relu);
        }
    } else {
        NAME(apply1)(x, n1, n2, len, s1, s2, mean, scale, shift, y, t1, t2,
                     relu);
    }
}

static void NAME(bwd_apply1)(const T *dy, ptrdiff_t d1, ptrdiff_t d2,
                             const T *x, ptrdiff_t s1, ptrdiff_t s2,
                             ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                             const double *mean, const double *ra,
                             const double *rb, const double *k_dy,
                             const double *k_xmu, const double *k_0, T *dx,
                             ptrdiff_t t1, ptrdiff_t t2)
{
    if (len == 1 && d2 == 1 && s2 == 1 && t2 == 1)
        NAME(rows_bwd_apply)(dy, d1, x, s1, n1, n2, mean, ra, rb, k_dy, k_xmu,
                             k_0, dx, t1);
    else
        NAME(runs_bwd_apply)(dy, d1, d2, x, s1, s2, n1, n2, len, mean, ra, rb,
                             k_dy, k_xmu, k_0, dx, t1, t2);
}

static void NAME(panel_bwd_apply)(const T *dy, ptrdiff_t d1, ptrdiff_t d2,
                                  const T *x, ptrdiff_t s1, ptrdiff_t s2,
                                  ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                                  const double *mean, const double *ra,
                                  const double *rb, const double *k_dy,
                                  const double *k_xmu, const double *k_0,
                                  T *dx, ptrdiff_t t1, ptrdiff_t t2)
{
    int nt = bnf_threads_for(n1 * n2 * len);
    if (nt > 1 && n1 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t i0, i1;
            bnf_part(n1, nt, t, 1, &i0, &i1);
            NAME(bwd_apply1)(dy + i0 * d1, d1, d2, x + i0 * s1, s1, s2,
                             i1 - i0, n2, len, mean, ra, rb, k_dy, k_xmu,
                             k_0, dx + i0 * t1, t1, t2);
        }
    } else if (nt > 1 && n2 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t j0, j1;
            bnf_part(n2, nt, t, 1, &j0, &j1);
            NAME(bwd_apply1)(dy + j0 * d2, d1, d2, x + j0 * s2, s1, s2, n1,
                             j1 - j0, len, mean + j0, ra ? ra + j0 : NULL,
                             rb ? rb + j0 : NULL, k_dy + j0, k_xmu + j0,
                             k_0 + j0, dx + j0 * t2, t1, t2);
        }
    } else {
        NAME(bwd_apply1)(dy, d1, d2, x, s1, s2, n1, n2, len, mean, ra, rb,
                         k_dy, k_xmu, k_0, dx, t1, t2);
    }
}

int NAME(bn_stats)(const T *x, ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                   ptrdiff_t xs1, ptrdiff_t xs2, double *mean, double *m2)
{
    return NAME(panel_stats)(x, n1, n2, len, xs1, xs2, mean, m2);
}

int NAME(bn_apply)(const T *x, ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                   ptrdiff_t xs1, ptrdiff_t xs2, const double *gamma,
                   const double *beta, const double *mean,
                   const double *invstd, T *y, ptrdiff_t ys1, ptrdiff_t ys2,
                   int relu)
{
    double *scale = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (scale == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++)
        scale[j] = gamma[j] * invstd[j];
    NAME(panel_apply)(x, n1, n2, len, xs1, xs2, mean, scale, beta, y, ys1,
                      ys2, relu);
    free(scale);
    return BNF_OK;
}

int NAME(bn_forward_train)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                           ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                           const double *gamma, const double *beta,
                           double eps, T *y, ptrdiff_t ys1, ptrdiff_t ys2,
                           double *mean, double *invstd, double *var,
                           int relu)
{
    if (NAME(panel_stats)(x, n1, n2, len, xs1, xs2, mean, var) != BNF_OK)
        return BNF_ENOMEM;
    double count = (double)n1 * (double)len;
    for (ptrdiff_t j = 0; j < n2; j++) {
        var[j] /= count; /* M2 -> biased variance */
        invstd[j] = 1.0 / sqrt(var[j] + eps);
    }
    return NAME(bn_apply)(x, n1, n2, len, xs1, xs2, gamma, beta, mean, invstd,
                          y, ys1, ys2, relu);
}

int NAME(bn_forward_test)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                          ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                          const double *gamma, const double *beta,
                          const double *mean, const double *var, double eps,
                          T *y, ptrdiff_t ys1, ptrdiff_t ys2, int relu)
{
    double *scale = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (scale == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++)
        scale[j] = gamma[j] / sqrt(var[j] + eps);
    NAME(panel_apply)(x, n1, n2, len, xs1, xs2, mean, scale, beta, y, ys1,
                      ys2, relu);
    free(scale);
    return BNF_OK;
}

/*
 * With xhat = (x - mean) * invstd, a = gamma * invstd, n = the count and
 * g = dy (with relu: dy where the forward's (x - mean) * a + beta > 0,
 * else 0, recomputed here exactly as the forward computed it):
 *   dbeta = sum g,  dgamma = invstd * sum g * (x - mean),
 *   dx = a * (g - dbeta / n - xhat * dgamma / n)
 *      = a * g + (x - mean) * (-a * invstd * dgamma / n) + (-a * dbeta / n).
 * bn_backward_reduce computes the two sums over the panel, bn_backward_apply
 * dx from sums and count given (over several panels: synchronized batch
 * norm), bn_backward both for one panel.
 */
int NAME(bn_backward_reduce)(const T *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                             const T *x, ptrdiff_t xs1, ptrdiff_t xs2,
                             ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                             const double *mean, const double *invstd,
                             const double *gamma, const double *beta,
                             int relu, double *sum_dy, double *sum_dyxmu)
{
    double *a = NULL;
    if (relu) {
        a = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
        if (a == NULL)
            return BNF_ENOMEM;
        for (ptrdiff_t j = 0; j < n2; j++)
            a[j] = gamma[j] * invstd[j]; /* as the forward's scale */
    }
    int rc = NAME(panel_bwd_reduce)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len,
                                    mean, a, relu ? beta : NULL, sum_dy,
                                    sum_dyxmu);
    free(a);
    return rc;
}

int NAME(bn_backward_apply)(const T *dy, ptrdiff_t ds1, ptrdiff_t ds2,
                            const T *x, ptrdiff_t xs1, ptrdiff_t xs2,
                            ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                            const double *mean, const double *invstd,
                            const double *gamma, const double *beta,
                            int relu, double count, const double *sum_dy,
                            const double *sum_dyxmu, T *dx, ptrdiff_t ts1,
                            ptrdiff_t ts2, double *dgamma, double *dbeta)
{
    double *k = malloc(3 * (size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (k == NULL)
        return BNF_ENOMEM;
    double *k_dy = k, *k_xmu = k + n2, *k_0 = k + 2 * n2;
    for (ptrdiff_t j = 0; j < n2; j++) {
        double a = gamma[j] * invstd[j]; /* a, as the forward's scale */
        double sg = sum_dy[j], sgx = sum_dyxmu[j] * invstd[j];
        k_dy[j] = a;
        k_xmu[j] = -a * invstd[j] * sgx / count;
        k_0[j] = -a * sg / count;
        dgamma[j] = sgx; /* sum g*(x-mean) -> sum g*xhat */
        dbeta[j] = sg;   /* last: dbeta may alias sum_dy */
    }
    const double *ra = relu ? k_dy : NULL, *rb = relu ? beta : NULL;
    NAME(panel_bwd_apply)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len, mean, ra, rb,
                          k_dy, k_xmu, k_0, dx, ts1, ts2);
    free(k);
    return BNF_OK;
}

int NAME(bn_backward)(const T *dy, ptrdiff_t ds1, ptrdiff_t ds2, const T *x,
                      ptrdiff_t xs1, ptrdiff_t xs2, ptrdiff_t n1,
                      ptrdiff_t n2, ptrdiff_t len, const double *mean,
                      const double *invstd, const double *gamma,
                      const double *beta, int relu, T *dx, ptrdiff_t ts1,
                      ptrdiff_t ts2, double *dgamma, double *dbeta)
{
    /* the sums land in dbeta and dgamma, which bn_backward_apply may
       overwrite in place */
    int rc = NAME(bn_backward_reduce)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len,
                                      mean, invstd, gamma, beta, relu, dbeta,
                                      dgamma);
    if (rc != BNF_OK)
        return rc;
    return NAME(bn_backward_apply)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len,
                                   mean, invstd, gamma, beta, relu,
                                   (double)n1 * (double)len, dbeta, dgamma, dx,
                                   ts1, ts2, dgamma, dbeta);
}
