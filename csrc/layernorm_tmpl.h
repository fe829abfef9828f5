/* Template body of the layer norm kernels; included by layernorm.c once per
   dtype through instantiate.h (T the data type, NAME(f) the name).

   Layer norm of an (n, d) panel of rows with unit-stride columns: the
   statistics are per row (a run of d elements), gamma and beta per column.
   Each row is processed while it sits in L1: forward reads x once and
   writes y once, backward reads dy and x once and writes dx once. */

#include "lanes_tmpl.h"

/* gamma (and beta) rounded to C once per call: the row loops read them
   for every row */
static C *NAME(ln_params)(ptrdiff_t d, const double *gamma, const double *beta)
{
    C *buf = malloc(2 * (size_t)(d > 0 ? d : 1) * sizeof(C));
    if (buf == NULL)
        return NULL;
    for (ptrdiff_t e = 0; e < d; e++) {
        buf[e] = gamma != NULL ? (C)gamma[e] : (C)1;
        buf[d + e] = beta != NULL ? (C)beta[e] : (C)0;
    }
    return buf;
}

BNF_NOINLINE static void NAME(ln_forward1)(
    const T *BNF_RESTRICT x, ptrdiff_t n, ptrdiff_t d, ptrdiff_t ldx,
    const C *BNF_RESTRICT gamma, const C *BNF_RESTRICT beta, double eps,
    T *BNF_RESTRICT y, ptrdiff_t ldy, double *BNF_RESTRICT mean,
    double *BNF_RESTRICT invstd)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *BNF_RESTRICT p = x + i * ldx;
        T *BNF_RESTRICT o = y + i * ldy;
        double k = (double)LOAD(p[0]);
        k = bnf_isfinite(k) ? k : 0.0;
        double mu = 0.0, m2 = 0.0;
        NAME(run_moments)(p, d, k, 0.0, &mu, &m2);
        mu += k;
        double is = 1.0 / sqrt(m2 / (double)d + eps);
        mean[i] = mu;
        invstd[i] = is;
        C mh = (C)mu, ml = 0, isc = (C)is;
        if (HILO && bnf_isfinite((double)mh))
            ml = (C)(mu - (double)mh);
        (void)ml; /* XMU reads it only when HILO */
        for (ptrdiff_t e = 0; e < d; e++)
            o[e] = STORE((XMU(LOAD(p[e]), mh, ml) * isc) * gamma[e] + beta[e]);
    }
}

/* One row's A = sum g and B = sum g * (x - mh) (see ln_backward1), in
   blocks of BNF_RUN_BLOCK; the mean as the pair (mh, ml) of HILO. */
BNF_INLINE void NAME(ln_row_sums)(const T *g, const T *p, const C *gamma,
                                  ptrdiff_t d, double mu, C *mh, C *ml,
                                  double *sa, double *sb)
{
    *mh = (C)mu;
    *ml = 0;
    if (HILO && bnf_isfinite((double)*mh))
        *ml = (C)(mu - (double)*mh);
    double a = 0.0, b = 0.0;
    for (ptrdiff_t e0 = 0; e0 < d; e0 += BNF_RUN_BLOCK) {
        double s1, s2;
        NAME(block_sums_ln)(g + e0, p + e0, gamma + e0,
                            bnf_min(BNF_RUN_BLOCK, d - e0), *mh, *ml, &s1,
                            &s2);
        a += s1;
        b += s2;
    }
    *sa = a;
    *sb = b;
}

/* dx of the rows of ln_backward1 whose sums A, B are out of range: B
   (and A) again in double, scaled (extremes_tmpl.h), then the row's dx as
   ln_backward1 forms it (its dgamma and dbeta do not depend on A and B).
   Out of ln_backward1, whose row loop stays as fast. */
static void NAME(ln_rescue_bwd)(const T *dy, ptrdiff_t lddy, const T *x,
                                ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d,
                                const double *mean, const double *invstd,
                                const C *gamma, T *dx, ptrdiff_t lddx)
{
    double dd = (double)d;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *g = dy + i * lddy, *p = x + i * ldx;
        T *o = dx + i * lddx;
        double mu = mean[i], is = invstd[i], sa, sb, sbh;
        C mh, ml;
        NAME(ln_row_sums)(g, p, gamma, d, mu, &mh, &ml, &sa, &sb);
        if (bnf_isfinite(sa) && bnf_isfinite(sb))
            continue;
        if (!NAME(rescue_bwd_sums)(g, 0, p, 0, 1, d, mu, is, gamma, NULL, &sa,
                                   &sbh))
            continue;
        C isc = (C)is, k0 = (C)(-(double)isc * sa / dd);
        C k1 = (C)(-is * sbh / dd);
        for (ptrdiff_t e = 0; e < d; e++) { /* as ln_backward1 */
            C ge = LOAD(g[e]), xh = XMU(LOAD(p[e]), mh, ml) * isc;
            o[e] = STORE(isc * (ge * gamma[e]) + k0 + xh * k1);
        }
    }
}

/*
 * Per row, with xmu = x - mean, is = 1/std, xhat = xmu * is, g = dy * gamma:
 *   A = sum g, B = sum g * xmu,
 *   dx = is * g - is * A / d - xhat * is * (is * B) / d;
 * and per column dgamma = sum over rows of dy * xhat, dbeta = sum dy,
 * summed in C over BNF_FLUSH rows, then in double over groups of
 * BNF_SUM_ROWS rows, added compensated for float64 (a broadcast dout over
 * many rows of one feature: 10x the reference's error before; scratch:
 * 4*d doubles, 2*d C values).
 */
BNF_NOINLINE static int NAME(ln_backward1)(
    const T *BNF_RESTRICT dy, ptrdiff_t lddy, const T *BNF_RESTRICT x,
    ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d, const double *BNF_RESTRICT mean,
    const double *BNF_RESTRICT invstd, const C *BNF_RESTRICT gamma,
    T *BNF_RESTRICT dx, ptrdiff_t lddx, double *BNF_RESTRICT dgamma,
    double *BNF_RESTRICT dbeta)
{
    size_t d1 = (size_t)(d > 0 ? d : 1);
    double *work = malloc(4 * d1 * sizeof(double) + 2 * d1 * sizeof(C));
    if (work == NULL)
        return BNF_ENOMEM;
    double *BNF_RESTRICT gg = work, *BNF_RESTRICT gb = work + d1;
    double *BNF_RESTRICT lg = work + 2 * d1, *BNF_RESTRICT lb = work + 3 * d1;
    C *BNF_RESTRICT fg = (C *)(work + 4 * d1), *BNF_RESTRICT fb = fg + d1;
    for (ptrdiff_t e = 0; e < d; e++) {
        dgamma[e] = dbeta[e] = gg[e] = gb[e] = lg[e] = lb[e] = 0.0;
        fg[e] = fb[e] = 0;
    }
    double dd = (double)d;
    int bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *BNF_RESTRICT g = dy + i * lddy;
        const T *BNF_RESTRICT p = x + i * ldx;
        T *BNF_RESTRICT o = dx + i * lddx;
        double mu = mean[i], is = invstd[i], sa, sb;
        C mh, ml;
        NAME(ln_row_sums)(g, p, gamma, d, mu, &mh, &ml, &sa, &sb);
        /* sums out of range (x - mean of ~1e308, C sums of float32 past
           ~3e38): the row's dx again after the loop (ln_rescue_bwd) */
        bad |= !(bnf_isfinite(sa) & bnf_isfinite(sb));
        /* k0 from the rounded is: with one feature, is * g in C and
           -is * sa in double round alike, and dx is exactly 0 */
        C isc = (C)is, k0 = (C)(-(double)isc * sa / dd);
        C k1 = (C)(-is * (is * sb) / dd);
        for (ptrdiff_t e = 0; e < d; e++) {
            /* dxhat = dy * gamma formed as in the row sums, so that the
               terms cancel exactly where they should (d == 1: dx == 0) */
            C ge = LOAD(g[e]), xh = XMU(LOAD(p[e]), mh, ml) * isc;
            o[e] = STORE(isc * (ge * gamma[e]) + k0 + xh * k1);
            fg[e] += ge * xh;
            fb[e] += ge;
        }
        if ((i + 1) % BNF_FLUSH == 0 || (i + 1) % BNF_SUM_ROWS == 0 ||
            i + 1 == n) {
            for (ptrdiff_t e = 0; e < d; e++) {
                gg[e] += (double)fg[e];
                gb[e] += (double)fb[e];
                fg[e] = fb[e] = 0;
            }
        }
        if ((i + 1) % BNF_SUM_ROWS == 0 || i + 1 == n) {
            for (ptrdiff_t e = 0; e < d; e++) {
                if (HILO) {
                    dgamma[e] += gg[e];
                    dbeta[e] += gb[e];
                } else { /* float64: compensated, as rows_bwd_reduce */
                    double eg, eb;
                    dgamma[e] = bnf_two_sum(dgamma[e], gg[e], &eg);
                    dbeta[e] = bnf_two_sum(dbeta[e], gb[e], &eb);
                    lg[e] += eg;
                    lb[e] += eb;
                }
                gg[e] = gb[e] = 0.0;
            }
        }
    }
    for (ptrdiff_t e = 0; !HILO && e < d; e++) {
        dgamma[e] += lg[e];
        dbeta[e] += lb[e];
    }
    free(work);
    if (BNF_RARELY(bad))
        NAME(ln_rescue_bwd)(dy, lddy, x, ldx, n, d, mean, invstd, gamma, dx,
                            lddx);
    return BNF_OK;
}

/* The entry points split the rows among threads (bnf_run, internal.h):
   the forward is bitwise the serial one; the backward's per-thread dgamma
   and dbeta are summed in thread order. */
typedef struct {
    const bnf_panel *p;
    const bnf_params *q;
    const T *x, *dy;
    T *y; /* y or dx */
    bnf_results *r;
    const C *par; /* gamma (and beta) in C */
} NAME(ln_job);

/* Rows whose squares left the range (extremes_tmpl.h), told from their
   mean and 1/std (an infinite M2 gives is == 0; a variance at most tiny,
   with an eps as small, is >= 1/sqrt(2 tiny)): again, scaled, and their
   output again.  Out of ln_forward1, whose row loop stays as fast. */
static void NAME(ln_rescue_rows)(const T *x, ptrdiff_t n, ptrdiff_t d,
                                 ptrdiff_t ldx, const C *gamma, const C *beta,
                                 double eps, T *y, ptrdiff_t ldy, double *mean,
                                 double *invstd)
{
    double tiny = BNF_TINY_VAR(C), big = 1.0 / sqrt(2.0 * tiny);
    for (ptrdiff_t i = 0; i < n; i++) {
        if (!(!(bnf_isfinite(mean[i]) && bnf_isfinite(invstd[i]) &&
                invstd[i] > 0.0) ||
              (eps <= tiny && invstd[i] >= big)))
            continue;
        const T *p = x + i * ldx;
        T *o = y + i * ldy;
        double var;
        if (!NAME(rescue_moments)(p, 1, 0, d, eps, &mean[i], &var, &invstd[i]))
            continue;
        C mh = (C)mean[i], ml = 0, isc = (C)invstd[i];
        if (HILO && bnf_isfinite((double)mh))
            ml = (C)(mean[i] - (double)mh);
        (void)ml;
        for (ptrdiff_t e = 0; e < d; e++) /* as ln_forward1 */
            o[e] = STORE((XMU(LOAD(p[e]), mh, ml) * isc) * gamma[e] + beta[e]);
    }
}

static int NAME(ln_forward_rows)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                 double *part)
{
    const NAME(ln_job) *j = ctx;
    ptrdiff_t d = j->p->n2, ldx = j->p->x.s1, ldy = j->p->y.s1;
    (void)part;
    NAME(ln_forward1)(j->x + i0 * ldx, i1 - i0, d, ldx, j->par, j->par + d,
                      j->q->eps, j->y + i0 * ldy, ldy, j->r->mean + i0,
                      j->r->invstd + i0);
    NAME(ln_rescue_rows)(j->x + i0 * ldx, i1 - i0, d, ldx, j->par, j->par + d,
                         j->q->eps, j->y + i0 * ldy, ldy, j->r->mean + i0,
                         j->r->invstd + i0);
    return BNF_OK;
}

int NAME(ln_forward)(const bnf_panel *p, const bnf_params *q, const T *x, T *y,
                     bnf_results *r)
{
    ptrdiff_t n = p->n1, d = p->n2;
    C *par = NAME(ln_params)(d, q->gamma, q->beta);
    if (par == NULL)
        return BNF_ENOMEM;
    int nt = bnf_threads_for(n * d * (ptrdiff_t)sizeof(T));
    if (nt > n)
        nt = (int)n;
    NAME(ln_job) j = {p, q, x, NULL, y, r, par};
    bnf_split s = {.nt = nt, .n = n, .task = NAME(ln_forward_rows), .ctx = &j};
    int rc = bnf_run(&s);
    free(par);
    return rc;
}

/* rows [i0, i1); their dgamma and dbeta into the thread's part, or (one
   thread) into the results */
static int NAME(ln_backward_rows)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                  double *part)
{
    const NAME(ln_job) *j = ctx;
    const bnf_panel *p = j->p;
    ptrdiff_t d = p->n2;
    return NAME(ln_backward1)(
        j->dy + i0 * p->dy.s1, p->dy.s1, j->x + i0 * p->x.s1, p->x.s1, i1 - i0,
        d, j->q->mean + i0, j->q->invstd + i0, j->par, j->y + i0 * p->y.s1,
        p->y.s1, part ? part : j->r->dgamma, part ? part + d : j->r->dbeta);
}

int NAME(ln_backward)(const bnf_panel *p, const bnf_params *q, const T *x,
                      const T *dy, T *dx, bnf_results *r)
{
    ptrdiff_t n = p->n1, d = p->n2;
    int nt = bnf_threads_for(n * d * (ptrdiff_t)sizeof(T));
    if (nt > n)
        nt = (int)n;
    C *par = NAME(ln_params)(d, q->gamma, NULL);
    if (par == NULL)
        return BNF_ENOMEM;
    NAME(ln_job) j = {p, q, x, dy, dx, r, par};
    bnf_split s = {.nt = nt,
                   .n = n,
                   .task = NAME(ln_backward_rows),
                   .ctx = &j,
                   .per = nt < 2 ? 0 : 2 * d,
                   .merge = nt < 2 ? BNF_MERGE_NONE : BNF_MERGE_SUMS,
                   .k = 2,
                   .m = d,
                   .out = {r->dgamma, r->dbeta}};
    int rc = bnf_run(&s);
    free(par);
    return rc;
}
