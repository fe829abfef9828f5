/* Template body of the RMS norm kernels; included by rmsnorm.c once per
   dtype through instantiate.h (T the storage type, C the compute type,
   NAME(f) the name).

   RMS norm of an (n, d) panel of rows with unit-stride columns, the
   layer norm kernels' layout and structure (layernorm_tmpl.h): per row
   the mean of squares ms = sum x*x / d and is = 1/sqrt(ms + eps), then y
   = (x * is) * gamma; gamma per column.  Each row is processed while it
   sits in L1: forward reads x once and writes y once, backward reads dy
   and x once and writes dx once.  No mean is taken off, so there is no
   (mh, ml) pair and no shift: a row's sum of squares is one sum in the
   lanes of lanes_tmpl.h (block_sumsq), flushed into double. */

#include "lanes_tmpl.h"

/* gamma rounded to C once per call (NULL: ones) */
static C *NAME(rms_params)(ptrdiff_t d, const double *gamma)
{
    C *buf = malloc((size_t)(d > 0 ? d : 1) * sizeof(C));
    if (buf == NULL)
        return NULL;
    for (ptrdiff_t e = 0; e < d; e++)
        buf[e] = gamma != NULL ? (C)gamma[e] : (C)1;
    return buf;
}

/* sum x*x (dy NULL) or sum (dy * gamma) * x over a row, in blocks */
BNF_INLINE double NAME(rms_row_sum)(const T *dy, const T *p, const C *w,
                                    ptrdiff_t d)
{
    double q = 0.0;
    for (ptrdiff_t e0 = 0; e0 < d; e0 += BNF_RUN_BLOCK)
        q += NAME(block_sumsq)(dy ? dy + e0 : NULL, p + e0, w ? w + e0 : NULL,
                               bnf_min(BNF_RUN_BLOCK, d - e0));
    return q;
}

BNF_NOINLINE static void NAME(rms_forward1)(
    const T *BNF_RESTRICT x, ptrdiff_t n, ptrdiff_t d, ptrdiff_t ldx,
    const C *BNF_RESTRICT gamma, double eps, T *BNF_RESTRICT y, ptrdiff_t ldy,
    double *BNF_RESTRICT meansq, double *BNF_RESTRICT invrms)
{
    double dd = (double)d;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *BNF_RESTRICT p = x + i * ldx;
        T *BNF_RESTRICT o = y + i * ldy;
        double ms = NAME(rms_row_sum)(NULL, p, NULL, d) / dd;
        double is = 1.0 / sqrt(ms + eps);
        meansq[i] = ms;
        invrms[i] = is;
        C isc = (C)is;
        for (ptrdiff_t e = 0; e < d; e++)
            o[e] = STORE((LOAD(p[e]) * isc) * gamma[e]);
    }
}

/* Rows whose squares left the range (extremes_tmpl.h), told from their
   mean of squares: not finite (overflow, or a NaN or Inf in the data,
   which the rescue leaves), or at most tiny with an eps as small
   (underflow): again, scaled, and their output again, x * is formed in
   double (is may be past C's range).  Out of rms_forward1, whose row
   loop stays as fast. */
static void NAME(rms_rescue_rows)(const T *x, ptrdiff_t n, ptrdiff_t d,
                                  ptrdiff_t ldx, const C *gamma, double eps,
                                  T *y, ptrdiff_t ldy, double *meansq,
                                  double *invrms)
{
    double tiny = BNF_TINY_VAR(C);
    for (ptrdiff_t i = 0; i < n; i++) {
        if (bnf_isfinite(meansq[i]) && !(meansq[i] <= tiny && eps <= tiny))
            continue;
        const T *p = x + i * ldx;
        T *o = y + i * ldy;
        if (!NAME(rescue_meansq)(p, d, eps, &meansq[i], &invrms[i]))
            continue;
        double is = invrms[i];
        for (ptrdiff_t e = 0; e < d; e++)
            o[e] = STORE((C)((double)LOAD(p[e]) * is) * gamma[e]);
    }
}

/* dx of the rows of rms_backward1 whose sum B is out of range: B again
   in double, scaled (rescue_bwd_sums with mean 0 gives sum g * xhat),
   then the row's dx as rms_backward1 forms it. */
static void NAME(rms_rescue_bwd)(const T *dy, ptrdiff_t lddy, const T *x,
                                 ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d,
                                 const double *invrms, const C *gamma, T *dx,
                                 ptrdiff_t lddx)
{
    double dd = (double)d;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *g = dy + i * lddy, *p = x + i * ldx;
        T *o = dx + i * lddx;
        double is = invrms[i], sa, sbh;
        double sb = NAME(rms_row_sum)(g, p, gamma, d);
        if (bnf_isfinite(sb))
            continue;
        if (!NAME(rescue_bwd_sums)(g, 0, p, 0, 1, d, 0.0, is, gamma, NULL, &sa,
                                   &sbh))
            continue;
        C isc = (C)is, k1 = (C)(-is * sbh / dd);
        for (ptrdiff_t e = 0; e < d; e++) { /* as rms_backward1 */
            C ge = LOAD(g[e]), xh = LOAD(p[e]) * isc;
            o[e] = STORE(isc * (ge * gamma[e]) + xh * k1);
        }
    }
}

/*
 * Per row, with is = 1/rms, xhat = x * is, g = dy * gamma:
 *   B = sum g * x,  dx = is * g - xhat * is * (is * B) / d
 * (= is * (g - xhat * mean(g * xhat))); per column dgamma = sum over rows
 * of dy * xhat, summed as layer norm's (ln_backward1: C over BNF_FLUSH
 * rows, double over BNF_SUM_ROWS, compensated for float64; scratch: 2*d
 * doubles, d C values).
 */
BNF_NOINLINE static int NAME(rms_backward1)(
    const T *BNF_RESTRICT dy, ptrdiff_t lddy, const T *BNF_RESTRICT x,
    ptrdiff_t ldx, ptrdiff_t n, ptrdiff_t d, const double *BNF_RESTRICT invrms,
    const C *BNF_RESTRICT gamma, T *BNF_RESTRICT dx, ptrdiff_t lddx,
    double *BNF_RESTRICT dgamma)
{
    size_t d1 = (size_t)(d > 0 ? d : 1);
    double *work = malloc(2 * d1 * sizeof(double) + d1 * sizeof(C));
    if (work == NULL)
        return BNF_ENOMEM;
    double *BNF_RESTRICT gg = work, *BNF_RESTRICT lg = work + d1;
    C *BNF_RESTRICT fg = (C *)(work + 2 * d1);
    for (ptrdiff_t e = 0; e < d; e++) {
        dgamma[e] = gg[e] = lg[e] = 0.0;
        fg[e] = 0;
    }
    double dd = (double)d;
    int bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *BNF_RESTRICT g = dy + i * lddy;
        const T *BNF_RESTRICT p = x + i * ldx;
        T *BNF_RESTRICT o = dx + i * lddx;
        double is = invrms[i];
        double sb = NAME(rms_row_sum)(g, p, gamma, d);
        /* a sum out of range: the row's dx again after the loop */
        bad |= !bnf_isfinite(sb);
        C isc = (C)is, k1 = (C)(-is * (is * sb) / dd);
        for (ptrdiff_t e = 0; e < d; e++) {
            C ge = LOAD(g[e]), xh = LOAD(p[e]) * isc;
            o[e] = STORE(isc * (ge * gamma[e]) + xh * k1);
            fg[e] += ge * xh;
        }
        if ((i + 1) % BNF_FLUSH == 0 || (i + 1) % BNF_SUM_ROWS == 0 ||
            i + 1 == n) {
            for (ptrdiff_t e = 0; e < d; e++) {
                gg[e] += (double)fg[e];
                fg[e] = 0;
            }
        }
        if ((i + 1) % BNF_SUM_ROWS == 0 || i + 1 == n) {
            for (ptrdiff_t e = 0; e < d; e++) {
                if (HILO) {
                    dgamma[e] += gg[e];
                } else { /* float64: compensated, as ln_backward1 */
                    double eg;
                    dgamma[e] = bnf_two_sum(dgamma[e], gg[e], &eg);
                    lg[e] += eg;
                }
                gg[e] = 0.0;
            }
        }
    }
    for (ptrdiff_t e = 0; !HILO && e < d; e++)
        dgamma[e] += lg[e];
    free(work);
    if (BNF_RARELY(bad))
        NAME(rms_rescue_bwd)(dy, lddy, x, ldx, n, d, invrms, gamma, dx, lddx);
    return BNF_OK;
}

/* The entry points split the rows among threads (bnf_run, internal.h), as
   layer norm's: the forward is bitwise the serial one; the backward's
   per-thread dgamma are summed in thread order. */
typedef struct {
    const bnf_panel *p;
    const bnf_params *q;
    const T *x, *dy;
    T *y; /* y or dx */
    bnf_results *r;
    const C *par; /* gamma in C */
} NAME(rms_job);

static int NAME(rms_forward_rows)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                  double *part)
{
    const NAME(rms_job) *j = ctx;
    ptrdiff_t d = j->p->n2, ldx = j->p->x.s1, ldy = j->p->y.s1;
    (void)part;
    NAME(rms_forward1)(j->x + i0 * ldx, i1 - i0, d, ldx, j->par, j->q->eps,
                       j->y + i0 * ldy, ldy, j->r->mean + i0,
                       j->r->invstd + i0);
    NAME(rms_rescue_rows)(j->x + i0 * ldx, i1 - i0, d, ldx, j->par, j->q->eps,
                          j->y + i0 * ldy, ldy, j->r->mean + i0,
                          j->r->invstd + i0);
    return BNF_OK;
}

int NAME(rms_forward)(const bnf_panel *p, const bnf_params *q, const T *x,
                      T *y, bnf_results *r)
{
    ptrdiff_t n = p->n1, d = p->n2;
    C *par = NAME(rms_params)(d, q->gamma);
    if (par == NULL)
        return BNF_ENOMEM;
    int nt = bnf_threads_for(n * d * (ptrdiff_t)sizeof(T));
    if (nt > n)
        nt = (int)n;
    NAME(rms_job) j = {p, q, x, NULL, y, r, par};
    bnf_split s = {
        .nt = nt, .n = n, .task = NAME(rms_forward_rows), .ctx = &j};
    int rc = bnf_run(&s);
    free(par);
    return rc;
}

/* rows [i0, i1); their dgamma into the thread's part, or (one thread)
   into the results */
static int NAME(rms_backward_rows)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                   double *part)
{
    const NAME(rms_job) *j = ctx;
    const bnf_panel *p = j->p;
    return NAME(rms_backward1)(j->dy + i0 * p->dy.s1, p->dy.s1,
                               j->x + i0 * p->x.s1, p->x.s1, i1 - i0, p->n2,
                               j->q->invstd + i0, j->par, j->y + i0 * p->y.s1,
                               p->y.s1, part ? part : j->r->dgamma);
}

int NAME(rms_backward)(const bnf_panel *p, const bnf_params *q, const T *x,
                       const T *dy, T *dx, bnf_results *r)
{
    ptrdiff_t n = p->n1, d = p->n2;
    int nt = bnf_threads_for(n * d * (ptrdiff_t)sizeof(T));
    if (nt > n)
        nt = (int)n;
    C *par = NAME(rms_params)(d, q->gamma);
    if (par == NULL)
        return BNF_ENOMEM;
    NAME(rms_job) j = {p, q, x, dy, dx, r, par};
    bnf_split s = {.nt = nt,
                   .n = n,
                   .task = NAME(rms_backward_rows),
                   .ctx = &j,
                   .per = nt < 2 ? 0 : d,
                   .merge = nt < 2 ? BNF_MERGE_NONE : BNF_MERGE_SUMS,
                   .k = 1,
                   .m = d,
                   .out = {r->dgamma}};
    int rc = bnf_run(&s);
    free(par);
    return rc;
}
