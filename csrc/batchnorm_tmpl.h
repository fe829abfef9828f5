/* Template body of the batch norm entry points on an (n, d) panel;
   included by batchnorm.c once per dtype through instantiate.h (T the data
   type, NAME(f) the name).  These compose the kernels of stats.c and
   normalize.c and do the O(d) per-channel arithmetic in double. */

/* The family's kernels for a panel: across rows when runs are single
   elements and channels are adjacent (s1 is then the row stride), along
   runs otherwise (correct for any panel). */
static int NAME(panel_stats)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                             ptrdiff_t len, ptrdiff_t s1, ptrdiff_t s2,
                             double *mean, double *m2)
{
    if (len == 1 && s2 == 1)
        return NAME(rows_stats)(x, n1, n2, s1, mean, m2);
    NAME(runs_stats)(x, n1, s1, n2, s2, len, mean, m2);
    return BNF_OK;
}

static void NAME(panel_apply)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                              ptrdiff_t len, ptrdiff_t s1, ptrdiff_t s2,
                              const double *mean, const double *scale,
                              const double *shift, T *y, ptrdiff_t t1,
                              ptrdiff_t t2)
{
    if (len == 1 && s2 == 1 && t2 == 1)
        NAME(rows_apply)(x, n1, n2, s1, mean, scale, shift, y, t1);
    else
        NAME(runs_apply)(x, n1, s1, n2, s2, len, mean, scale, shift, y, t1,
                         t2);
}

int NAME(bn_forward_train)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                           ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                           const double *gamma, const double *beta,
                           double eps, T *y, ptrdiff_t ys1, ptrdiff_t ys2,
                           double *mean, double *invstd, double *var)
{
    double *scale = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (scale == NULL)
        return BNF_ENOMEM;
    if (NAME(panel_stats)(x, n1, n2, len, xs1, xs2, mean, var) != BNF_OK) {
        free(scale);
        return BNF_ENOMEM;
    }
    double count = (double)n1 * (double)len;
    for (ptrdiff_t j = 0; j < n2; j++) {
        var[j] /= count; /* M2 -> biased variance */
        invstd[j] = 1.0 / sqrt(var[j] + eps);
        scale[j] = gamma[j] * invstd[j];
    }
    NAME(panel_apply)(x, n1, n2, len, xs1, xs2, mean, scale, beta, y, ys1,
                      ys2);
    free(scale);
    return BNF_OK;
}

int NAME(bn_forward_test)(const T *x, ptrdiff_t n1, ptrdiff_t n2,
                          ptrdiff_t len, ptrdiff_t xs1, ptrdiff_t xs2,
                          const double *gamma, const double *beta,
                          const double *mean, const double *var, double eps,
                          T *y, ptrdiff_t ys1, ptrdiff_t ys2)
{
    double *scale = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (scale == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++)
        scale[j] = gamma[j] / sqrt(var[j] + eps);
    NAME(panel_apply)(x, n1, n2, len, xs1, xs2, mean, scale, beta, y, ys1,
                      ys2);
    free(scale);
    return BNF_OK;
}

/*
 * With xhat = (x - mean) * invstd, a = gamma * invstd, n = n1 * len,
 *   dbeta = sum dy,  dgamma = invstd * sum dy * (x - mean),
 *   dx = a * (dy - dbeta / n - xhat * dgamma / n)
 *      = a * dy + (x - mean) * (-a * invstd * dgamma / n) + (-a * dbeta / n).
 */
int NAME(bn_backward)(const T *dy, ptrdiff_t ds1, ptrdiff_t ds2, const T *x,
                      ptrdiff_t xs1, ptrdiff_t xs2, ptrdiff_t n1,
                      ptrdiff_t n2, ptrdiff_t len, const double *mean,
                      const double *invstd, const double *gamma, T *dx,
                      ptrdiff_t ts1, ptrdiff_t ts2, double *dgamma,
                      double *dbeta)
{
    double *k = malloc(3 * (size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (k == NULL)
        return BNF_ENOMEM;
    double *k_dy = k, *k_xmu = k + n2, *k_0 = k + 2 * n2;
    int rows = len == 1 && ds2 == 1 && xs2 == 1 && ts2 == 1;
    if (rows) {
        if (NAME(rows_bwd_reduce)(dy, ds1, x, xs1, n1, n2, mean, dbeta,
                                  dgamma) != BNF_OK) {
            free(k);
            return BNF_ENOMEM;
        }
    } else {
        NAME(runs_bwd_reduce)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len, mean,
                              dbeta, dgamma);
    }
    double count = (double)n1 * (double)len;
    for (ptrdiff_t j = 0; j < n2; j++) {
        double a = gamma[j] * invstd[j];
        dgamma[j] *= invstd[j]; /* sum dy*(x-mean) -> sum dy*xhat */
        k_dy[j] = a;
        k_xmu[j] = -a * invstd[j] * dgamma[j] / count;
        k_0[j] = -a * dbeta[j] / count;
    }
    if (rows)
        NAME(rows_bwd_apply)(dy, ds1, x, xs1, n1, n2, mean, k_dy, k_xmu, k_0,
                             dx, ts1);
    else
        NAME(runs_bwd_apply)(dy, ds1, ds2, x, xs1, xs2, n1, n2, len, mean,
                             k_dy, k_xmu, k_0, dx, ts1, ts2);
    free(k);
    return BNF_OK;
}
