/* Template body of the layer norm kernels; included by layernorm.c once per
   dtype through instantiate.h (T the data type, NAME(f) the name).

   Layer norm of an (n, d) panel of rows with unit-stride columns: the
   statistics are per row (a run of d elements), gamma and beta per column.
   Each row is processed while it sits in L1: forward reads x once and
   writes y once, backward reads dy and x once and writes dx once. */

#include "lanes_tmpl.h"

BNF_DISPATCH
static void NAME(ln_forward1)(const T *restrict x, ptrdiff_t n, ptrdiff_t d,
                      ptrdiff_t ldx, const double *restrict gamma,
                      const double *restrict beta, double eps,
                      T *restrict y, ptrdiff_t ldy, double *restrict mean,
                      double *restrict invstd)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *restrict p = x + i * ldx;
        T *restrict o = y + i * ldy;
        double k = (double)p[0];
        k = bnf_isfinite(k) ? k : 0.0;
        double mu = 0.0, m2 = 0.0;
        NAME(run_moments)(p, d, k, 0.0, &mu, &m2);
        mu += k;
        double is = 1.0 / sqrt(m2 / (double)d + eps);
        mean[i] = mu;
        invstd[i] = is;
        for (ptrdiff_t e = 0; e < d; e++)
            o[e] = (T)(((double)p[e] - mu) * is * gamma[e] + beta[e]);
    }
}

/*
 * Per row, with xmu = x - mean, is = 1/std, g = dy * gamma:
 *   A = sum g, B = sum g * xmu,
 *   dx = is * g - is * A / d - xmu * is**3 * B / d;
 * and per column dgamma = sum over rows of dy * xmu * is, dbeta = sum dy,
 * accumulated in groups of BNF_SUM_ROWS rows (scratch: 2*d doubles).
 */
BNF_DISPATCH
static int NAME(ln_backward1)(const T *restrict dy, ptrdiff_t lddy,
                      const T *restrict x, ptrdiff_t ldx, ptrdiff_t n,
                      ptrdiff_t d, const double *restrict mean,
                      const double *restrict invstd,
                      const double *restrict gamma, T *restrict dx,
                      ptrdiff_t lddx, double *restrict dgamma,
                      double *restrict dbeta)
{
    double *work = malloc(2 * (size_t)(d > 0 ? d : 1) * sizeof(double));
    if (work == NULL)
        return BNF_ENOMEM;
    double *restrict gg = work, *restrict gb = work + d;
    for (ptrdiff_t e = 0; e < d; e++)
        dgamma[e] = dbeta[e] = gg[e] = gb[e] = 0.0;
    double dd = (double)d;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *restrict g = dy + i * lddy;
        const T *restrict p = x + i * ldx;
        T *restrict o = dx + i * lddx;
        double mu = mean[i], is = invstd[i], a = 0.0, b = 0.0;
        for (ptrdiff_t e0 = 0; e0 < d; e0 += BNF_RUN_BLOCK) {
            double sa, sb;
            NAME(block_sums_ln)(g + e0, p + e0, gamma + e0,
                                bnf_min(BNF_RUN_BLOCK, d - e0), mu, &sa, &sb);
            a += sa;
            b += sb;
        }
        double k0 = -is * a / dd, k1 = -is * is * is * b / dd;
        for (ptrdiff_t e = 0; e < d; e++) {
            /* dxhat = dy * gamma formed as in the row sums, so that the
               terms cancel exactly where they should (d == 1: dx == 0) */
            double ge = (double)g[e], xmu = (double)p[e] - mu;
            o[e] = (T)(is * (ge * gamma[e]) + k0 + xmu * k1);
            gg[e] += ge * xmu * is;
            gb[e] += ge;
        }
        if ((i + 1) % BNF_SUM_ROWS == 0 || i + 1 == n) {
            for (ptrdiff_t e = 0; e < d; e++) {
                dgamma[e] += gg[e];
                dbeta[e] += gb[e];
                gg[e] = gb[e] = 0.0;
            }
        }
    }
    free(work);
    return BNF_OK;
}

/* The entry points split the rows among threads: the forward is bitwise
   the serial one; the backward's per-thread dgamma and dbeta are summed in
   thread order. */
void NAME(ln_forward)(const T *x, ptrdiff_t n, ptrdiff_t d, ptrdiff_t ldx,
                      const double *gamma, const double *beta, double eps,
                      T *y, ptrdiff_t ldy, double *mean, double *invstd)
{
    int nt = bnf_threads_for(n * d);
    if (nt > n)
        nt = (int)n;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        bnf_part(n, nt, t, 1, &i0, &i1);
        NAME(ln_forward1)(x + i0 * ldx, i1 - i0, d, ldx, gamma, beta, eps,
                          y + i0 * ldy, ldy, mean + i0, invstd + i0);
    }
}

int NAME(ln_backward)(const T *dy, ptrdiff_t lddy, const T *x, ptrdiff_t ldx,
                      ptrdiff_t n, ptrdiff_t d, const double *mean,
                      const double *invstd, const double *gamma, T *dx,
                      ptrdiff_t lddx, double *dgamma, double *dbeta)
{
    int nt = bnf_threads_for(n * d), rc = BNF_OK;
    if (nt > n)
        nt = (int)n;
    if (nt < 2)
        return NAME(ln_backward1)(dy, lddy, x, ldx, n, d, mean, invstd, gamma,
                                  dx, lddx, dgamma, dbeta);
    double *part = malloc(2 * (size_t)nt * (size_t)d * sizeof(double));
    if (part == NULL)
        return BNF_ENOMEM;
    BNF_PARALLEL_FOR(nt)
    for (int t = 0; t < nt; t++) {
        ptrdiff_t i0, i1;
        bnf_part(n, nt, t, 1, &i0, &i1);
        if (NAME(ln_backward1)(dy + i0 * lddy, lddy, x + i0 * ldx, ldx,
                               i1 - i0, d, mean + i0, invstd + i0, gamma,
                               dx + i0 * lddx, lddx, part + 2 * t * d,
                               part + (2 * t + 1) * d) != BNF_OK)
            rc = BNF_ENOMEM;
    }
    for (ptrdiff_t e = 0; e < d; e++) {
        dgamma[e] = dbeta[e] = 0.0;
        for (int t = 0; t < nt; t++) {
            dgamma[e] += part[2 * t * d + e];
            dbeta[e] += part[(2 * t + 1) * d + e];
        }
    }
    free(part);
    return rc;
}
