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
                             NAME(bnf_coefs) cf, int relu, double *sum_dy,
                             double *sum_dyxmu)
{
    if (len == 1 && s2 == 1 && d2 == 1)
        return NAME(rows_bwd_reduce)(dy, d1, x, s1, n1, n2, cf, relu, sum_dy,
                                     sum_dyxmu);
    NAME(runs_bwd_reduce)(dy, d1, d2, x, s1, s2, n1, n2, len, cf, relu,
                          sum_dy, sum_dyxmu);
    return BNF_OK;
}

/* The C coefficients of n channels (internal.h) from their double
   values, in one new buffer (NULL when out of memory; free it): mean
   split into mh + ml, and any of the others that is not NULL. */
static C *NAME(coefs_new)(ptrdiff_t n, NAME(bnf_coefs) *cf,
                          const double *mean, const double *a,
                          const double *b, const double *is,
                          const double *k_xhat, const double *k_0)
{
    ptrdiff_t n1 = n > 0 ? n : 1;
    C *buf = malloc(7 * (size_t)n1 * sizeof(C));
    if (buf == NULL)
        return NULL;
    const double *src[5] = {a, b, is, k_xhat, k_0};
    C *dst[5];
    for (int k = 0; k < 5; k++) {
        dst[k] = src[k] ? buf + (2 + k) * n1 : NULL;
        for (ptrdiff_t j = 0; src[k] && j < n; j++)
            dst[k][j] = (C)src[k][j];
    }
    C *mh = buf, *ml = buf + n1;
    for (ptrdiff_t j = 0; j < n; j++) {
        mh[j] = (C)mean[j];
        ml[j] = bnf_isfinite((double)mh[j]) ? (C)(mean[j] - (double)mh[j])
                                            : (C)0;
    }
    /* the apply's shift with the low part of the mean folded in:
       (x - mean) * a + b = (x - mh) * a + (b - ml * a) */
    if (HILO && a != NULL && b != NULL)
        for (ptrdiff_t j = 0; j < n; j++)
            dst[1][j] = (C)(b[j] - (double)ml[j] * a[j]);
    cf->mh = mh;
    cf->ml = HILO ? ml : NULL;
    cf->a = dst[0];
    cf->b = dst[1];
    cf->is = dst[2];
    cf->k_xhat = dst[3];
    cf->k_0 = dst[4];
    return buf;
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
                                  NAME(bnf_coefs) cf, int relu,
                                  double *sum_dy, double *sum_dyxmu)
{
    int nt = bnf_threads_for(n1 * n2 * len), rc = BNF_OK;
    if (NAME(split_channels)(nt, n2, len, s2)) {
        ptrdiff_t align = len == 1 && s2 == 1 ? 16 : 1;
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t j0, j1;
            bnf_part(n2, nt, t, align, &j0, &j1);
            if (NAME(bwd_reduce1)(dy + j0 * d2, d1, d2, x + j0 * s2, s1, s2,
                                  n1, j1 - j0, len, NAME(bnf_coefs_at)(cf, j0),
                                  relu, sum_dy + j0, sum_dyxmu + j0) != BNF_OK)
                rc = BNF_ENOMEM;
        }
        return rc;
    }
    if (nt < 2 || n1 < nt)
        return NAME(bwd_reduce1)(dy, d1, d2, x, s1, s2, n1, n2, len, cf, relu,
                                 sum_dy, sum_dyxmu);
    double *part = malloc(2 * (size_t)nt * (size_t)n2 * sizeof(double));
    if (part == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        bnf_part(n1, nt, t, 1, &i0, &i1);
        if (NAME(bwd_reduce1)(dy + i0 * d1, d1, d2, x + i0 * s1, s1, s2,
                              i1 - i0, n2, len, cf, relu, part + 2 * t * n2,
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
                         NAME(bnf_coefs) cf, T *y, ptrdiff_t t1, ptrdiff_t t2,
                         int relu)
{
    if (len == 1 && s2 == 1 && t2 == 1)
        NAME(rows_apply)(x, n1, n2, s1, cf, y, t1, relu);
    else
        NAME(runs_apply)(x, n1, s1, n2, s2, len, cf, y, t1, t2, relu);
}

static void NAME(panel_apply)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                              ptrdiff_t len, ptrdiff_t s1, ptrdiff_t s2,
                              NAME(bnf_coefs) cf, T *y, ptrdiff_t t1,
                              ptrdiff_t t2, int relu)
{
    int nt = bnf_threads_for(n1 * n2 * len);
    if (nt > 1 && n1 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t i0, i1;
            bnf_part(n1, nt, t, 1, &i0, &i1);
            NAME(apply1)(x + i0 * s1, i1 - i0, n2, len, s1, s2, cf,
                         y + i0 * t1, t1, t2, relu);
        }
    } else if (nt > 1 && n2 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t j0, j1;
            bnf_part(n2, nt, t, 1, &j0, &j1);
            NAME(apply1)(x + j0 * s2, n1, j1 - j0, len, s1, s2,
                         NAME(bnf_coefs_at)(cf, j0), y + j0 * t2, t1, t2,
                         relu);
        }
    } else {
        NAME(apply1)(x, n1, n2, len, s1, s2, cf, y, t1, t2, relu);
    }
}

static void NAME(bwd_apply1)(const T *dy, ptrdiff_t d1, ptrdiff_t d2,
                             const T *x, ptrdiff_t s1, ptrdiff_t s2,
                             ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                             NAME(bnf_coefs) cf, int relu, T *dx,
                             ptrdiff_t t1, ptrdiff_t t2)
{
    if (len == 1 && d2 == 1 && s2 == 1 && t2 == 1)
        NAME(rows_bwd_apply)(dy, d1, x, s1, n1, n2, cf, relu, dx, t1);
    else
        NAME(runs_bwd_apply)(dy, d1, d2, x, s1, s2, n1, n2, len, cf, relu, dx,
                             t1, t2);
}

static void NAME(panel_bwd_apply)(const T *dy, ptrdiff_t d1, ptrdiff_t d2,
                                  const T *x, ptrdiff_t s1, ptrdiff_t s2,
                                  ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                                  NAME(bnf_coefs) cf, int relu, T *dx,
                                  ptrdiff_t t1, ptrdiff_t t2)
{
    int nt = bnf_threads_for(n1 * n2 * len);
    if (nt > 1 && n1 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t i0, i1;
            bnf_part(n1, nt, t, 1, &i0, &i1);
            NAME(bwd_apply1)(dy + i0 * d1, d1, d2, x + i0 * s1, s1, s2,
                             i1 - i0, n2, len, cf, relu, dx + i0 * t1, t1,
                             t2);
        }
    } else if (nt > 1 && n2 >= nt) {
        BNF_PARALLEL_FOR(nt)
        for (int t = 0; t < nt; t++) {
            ptrdiff_t j0, j1;
            bnf_part(n2, nt, t, 1, &j0, &j1);
            NAME(bwd_apply1)(dy + j0 * d2, d1, d2, x + j0 * s2, s1, s2, n1,
                             j1 - j0, len, NAME(bnf_coefs_at)(cf, j0), relu,
                             dx + j0 * t2, t1, t2);
        }
    } else {
        NAME(bwd_apply1)(dy, d1, d2, x, s1, s2, n1, n2, len, cf, relu, dx, t1,
                         t2);
    }
}

int NAME(bn_stats)(const T *x, ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t len,
                   ptrdiff_t xs1, ptrdiff_t xs2, double *mean, double *m2)
{
    return NAME(panel_stats)(x, n1, n2, len, xs1, xs2, mean, m2);
}

/* y = (x - mean) * (gamma * invstd) + beta, the coefficients rounded
   once to C */
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
    NAME(bnf_coefs) cf;
    C *buf = NAME(coefs_new)(n2, &cf, mean, scale, beta, NULL, NULL, NULL);
    free(scale);
    if (buf == NULL)
        return BNF_ENOMEM;
    NAME(panel_apply)(x, n1, n2, len, xs1, xs2, cf, y, ys1, ys2, relu);
    free(buf);
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
    double *is = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (is == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++)
        is[j] = 1.0 / sqrt(var[j] + eps);
    int rc = NAME(bn_apply)(x, n1, n2, len, xs1, xs2, gamma, beta, mean, is,
                            y, ys1, ys2, relu);
    free(is);
    return rc;
}

/*
 * With xhat = (x - mean) * invstd, a = gamma * invstd, n = the count and
 * g = dy (with relu: dy where the forward's (x - mean) * a + beta > 0,
 * else 0, recomputed here exactly as the forward computed it):
 *   dbeta = sum g,  dgamma = invstd * sum g * (x - mean),
 *   dx = a * (g - dbeta / n - xhat * dgamma / n)
 *      = a * g + xhat * (-a * dgamma / n) + (-a * dbeta / n).
 * (xhat formed in the kernel, so no coefficient has the range of
 * invstd**2.)  bn_backward_reduce computes the two sums over the panel,
 * bn_backward_apply dx from sums and count given (over several panels:
 * synchronized batch norm), bn_backward both for one panel.
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
    NAME(bnf_coefs) cf;
    C *buf = NAME(coefs_new)(n2, &cf, mean, a, relu ? beta : NULL, NULL,
                             NULL, NULL);
    free(a);
    if (buf == NULL)
        return BNF_ENOMEM;
    int rc = NAME(panel_bwd_reduce)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len,
                                    cf, relu, sum_dy, sum_dyxmu);
    free(buf);
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
    double *k_dy = k, *k_xhat = k + n2, *k_0 = k + 2 * n2;
    for (ptrdiff_t j = 0; j < n2; j++) {
        double a = gamma[j] * invstd[j]; /* a, as the forward's scale */
        double sg = sum_dy[j], sgx = sum_dyxmu[j] * invstd[j];
        k_dy[j] = a;
        k_xhat[j] = -a * sgx / count;
        /* from a rounded to C: with one value per channel a * g in C and
           -a * sg in double round alike, and dx is exactly 0 */
        k_0[j] = -(double)(C)a * sg / count;
    }
    NAME(bnf_coefs) cf;
    C *buf = NAME(coefs_new)(n2, &cf, mean, k_dy, relu ? beta : NULL, invstd,
                             k_xhat, k_0);
    free(k);
    if (buf == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++) {
        double sg = sum_dy[j];
        dgamma[j] = sum_dyxmu[j] * invstd[j]; /* sum g*xhat */
        dbeta[j] = sg; /* after dgamma: dbeta may alias sum_dy, dgamma
                          sum_dyxmu */
    }
    NAME(panel_bwd_apply)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len, cf, relu,
                          dx, ts1, ts2);
    free(buf);
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
