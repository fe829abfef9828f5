/* Template body of the batch norm entry points on an (n, d) panel;
   included by batchnorm.c once per dtype through instantiate.h (T the data
   type, NAME(f) the name).  These compose the kernels of stats.c and
   normalize.c and do the O(d) per-channel arithmetic in double. */

int NAME(bn_forward_train)(const T *x, ptrdiff_t n, ptrdiff_t d,
                           ptrdiff_t ldx, const double *gamma,
                           const double *beta, double eps, T *y,
                           ptrdiff_t ldy, double *mean, double *invstd,
                           double *var)
{
    double *scale = malloc((size_t)(d > 0 ? d : 1) * sizeof(double));
    if (scale == NULL)
        return BNF_ENOMEM;
    if (NAME(rows_stats)(x, n, d, ldx, mean, var) != BNF_OK) {
        free(scale);
        return BNF_ENOMEM;
    }
    for (ptrdiff_t j = 0; j < d; j++) {
        var[j] /= (double)n; /* M2 -> biased variance */
        invstd[j] = 1.0 / sqrt(var[j] + eps);
        scale[j] = gamma[j] * invstd[j];
    }
    NAME(rows_apply)(x, n, d, ldx, mean, scale, beta, y, ldy);
    free(scale);
    return BNF_OK;
}

int NAME(bn_forward_test)(const T *x, ptrdiff_t n, ptrdiff_t d,
                          ptrdiff_t ldx, const double *gamma,
                          const double *beta, const double *mean,
                          const double *var, double eps, T *y, ptrdiff_t ldy)
{
    double *scale = malloc((size_t)(d > 0 ? d : 1) * sizeof(double));
    if (scale == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < d; j++)
        scale[j] = gamma[j] / sqrt(var[j] + eps);
    NAME(rows_apply)(x, n, d, ldx, mean, scale, beta, y, ldy);
    free(scale);
    return BNF_OK;
}

/*
 * With xhat = (x - mean) * invstd, a = gamma * invstd,
 *   dbeta = sum dy,  dgamma = invstd * sum dy * (x - mean),
 *   dx = a * (dy - dbeta / n - xhat * dgamma / n)
 *      = a * dy + (x - mean) * (-a * invstd * dgamma / n) + (-a * dbeta / n).
 */
int NAME(bn_backward)(const T *dy, ptrdiff_t lddy, const T *x, ptrdiff_t ldx,
                      ptrdiff_t n, ptrdiff_t d, const double *mean,
                      const double *invstd, const double *gamma, T *dx,
                      ptrdiff_t lddx, double *dgamma, double *dbeta)
{
    double *k = malloc(3 * (size_t)(d > 0 ? d : 1) * sizeof(double));
    if (k == NULL)
        return BNF_ENOMEM;
    double *k_dy = k, *k_xmu = k + d, *k_0 = k + 2 * d;
    if (NAME(rows_bwd_reduce)(dy, lddy, x, ldx, n, d, mean, dbeta, dgamma) !=
        BNF_OK) {
        free(k);
        return BNF_ENOMEM;
    }
    double dn = (double)n;
    for (ptrdiff_t j = 0; j < d; j++) {
        double a = gamma[j] * invstd[j];
        dgamma[j] *= invstd[j]; /* sum dy*(x-mean) -> sum dy*xhat */
        k_dy[j] = a;
        k_xmu[j] = -a * invstd[j] * dgamma[j] / dn;
        k_0[j] = -a * dbeta[j] / dn;
    }
    NAME(rows_bwd_apply)(dy, lddy, x, ldx, n, d, mean, k_dy, k_xmu, k_0, dx,
                         lddx);
    free(k);
    return BNF_OK;
}

