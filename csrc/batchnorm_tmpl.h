/* Template body of the batch norm entry points on a panel (bnfast.h);
   included by batchnorm.c once per dtype through instantiate.h (T the data
   type, C the compute type, NAME(f) the name).  These compose the kernels
   of rows.c and runs.c and do the O(n2) per-channel
   arithmetic in double. */

/* One call on (part of) a panel: its data, coefficients and per-channel
   results (two arrays: mean and M2, or the backward's two sums). */
typedef struct {
    bnf_panel p;
    const T *x, *dy;
    T *y; /* y or dx */
    NAME(bnf_coefs) cf;
    int relu;
    double *r0, *r1;
    double *r2; /* the statistics' mean_lo (internal.h), or NULL */
    const T *z; /* the residual (strides p.z), NULL: none, or y itself */
    int res;    /* a residual is added (z, or y when z is NULL) */
} NAME(job);

/* The family's kernels for a panel, on one thread: across rows when runs
   are single elements and channels are adjacent in every array (s1 is
   then the row stride), along runs otherwise (correct for any panel). */
static int NAME(across_rows)(const NAME(job) *k, int dy, int y)
{
    const bnf_panel *p = &k->p;
    return p->len == 1 && p->x.s2 == 1 && (!dy || p->dy.s2 == 1) &&
           (!y || p->y.s2 == 1);
}

static int NAME(stats1)(const NAME(job) *k)
{
    const bnf_panel *p = &k->p;
    if (NAME(across_rows)(k, 0, 0))
        return NAME(rows_stats)(k->x, p->n1, p->n2, p->x.s1, k->r0, k->r1,
                                k->r2);
    NAME(runs_stats)(k->x, p->n1, p->x.s1, p->n2, p->x.s2, p->len, k->r0,
                     k->r1, k->r2);
    return BNF_OK;
}

static int NAME(bwd_reduce1)(const NAME(job) *k)
{
    const bnf_panel *p = &k->p;
    if (NAME(across_rows)(k, 1, 0))
        return NAME(rows_bwd_reduce)(k->dy, p->dy.s1, k->x, p->x.s1, p->n1,
                                     p->n2, k->cf, k->relu, k->r0, k->r1);
    NAME(runs_bwd_reduce)(k->dy, p->dy.s1, p->dy.s2, k->x, p->x.s1, p->x.s2,
                          p->n1, p->n2, p->len, k->cf, k->relu, k->r0, k->r1);
    return BNF_OK;
}

static int NAME(apply1)(const NAME(job) *k)
{
    const bnf_panel *p = &k->p;
    if (k->res) {
        if (NAME(across_rows)(k, 0, 1) && (k->z == NULL || p->z.s2 == 1))
            NAME(rows_apply_res)(k->x, p->n1, p->n2, p->x.s1, k->z, p->z.s1,
                                 k->cf, k->y, p->y.s1, k->relu);
        else
            NAME(runs_apply_res)(k->x, p->n1, p->x.s1, p->n2, p->x.s2, p->len,
                                 k->z, p->z.s1, p->z.s2, k->cf, k->y, p->y.s1,
                                 p->y.s2, k->relu);
        return BNF_OK;
    }
    if (NAME(across_rows)(k, 0, 1))
        NAME(rows_apply)(k->x, p->n1, p->n2, p->x.s1, k->cf, k->y, p->y.s1,
                         k->relu);
    else
        NAME(runs_apply)(k->x, p->n1, p->x.s1, p->n2, p->x.s2, p->len, k->cf,
                         k->y, p->y.s1, p->y.s2, k->relu);
    return BNF_OK;
}

/* the fused residual's gate with the backward's sums (across rows: one
   pass writing g into k->y, the sums into r0, r1) */
static int NAME(gate_reduce1)(const NAME(job) *k)
{
    const bnf_panel *p = &k->p;
    return NAME(rows_bwd_reduce_res)(k->dy, p->dy.s1, k->x, p->x.s1, k->z,
                                     p->z.s1, p->n1, p->n2, k->cf, k->y,
                                     p->y.s1, k->r0, k->r1);
}

/* the fused residual's gate: g (k->y) from dy, x, z */
static int NAME(gate1)(const NAME(job) *k)
{
    const bnf_panel *p = &k->p;
    if (NAME(across_rows)(k, 1, 1) && p->z.s2 == 1)
        NAME(rows_gate_res)(k->dy, p->dy.s1, k->x, p->x.s1, k->z, p->z.s1,
                            p->n1, p->n2, k->cf, k->y, p->y.s1);
    else
        NAME(runs_gate_res)(k->dy, p->dy.s1, p->dy.s2, k->x, p->x.s1, p->x.s2,
                            k->z, p->z.s1, p->z.s2, p->n1, p->n2, p->len,
                            k->cf, k->y, p->y.s1, p->y.s2);
    return BNF_OK;
}

static int NAME(bwd_apply1)(const NAME(job) *k)
{
    const bnf_panel *p = &k->p;
    if (NAME(across_rows)(k, 1, 1))
        NAME(rows_bwd_apply)(k->dy, p->dy.s1, k->x, p->x.s1, p->n1, p->n2,
                             k->cf, k->relu, k->y, p->y.s1);
    else
        NAME(runs_bwd_apply)(k->dy, p->dy.s1, p->dy.s2, k->x, p->x.s1, p->x.s2,
                             p->n1, p->n2, p->len, k->cf, k->relu, k->y,
                             p->y.s1, p->y.s2);
    return BNF_OK;
}

/*
 * Threads (bnf_run, internal.h).  A reduction splits the channels when
 * there are enough of them (each thread owns its outputs; across rows in
 * multiples of 16 columns), else the runs (rows), whose partial results
 * are merged in thread order.  Bitwise reproducible for a given thread
 * count; across thread counts equal to rounding (bitwise for runs split by
 * channel: their work per channel does not change; across rows a thread's
 * column range changes the row blocks).  The apply passes split the runs,
 * else the channels.
 */
typedef struct {
    const NAME(job) *k;
    int (*one)(const NAME(job) *k);
    int lo; /* the parts' means with their low parts (BNF_MERGE_MOMENTS) */
} NAME(split);

/* channels [lo, hi), their results in place */
static int NAME(channels_task)(void *ctx, ptrdiff_t lo, ptrdiff_t hi,
                               double *part)
{
    const NAME(split) *s = ctx;
    const NAME(job) *k = s->k;
    NAME(job) sub = *k;
    (void)part;
    sub.p.n2 = hi - lo;
    sub.x = k->x + lo * k->p.x.s2;
    sub.dy = k->dy ? k->dy + lo * k->p.dy.s2 : NULL;
    sub.y = k->y ? k->y + lo * k->p.y.s2 : NULL;
    sub.z = k->z ? k->z + lo * k->p.z.s2 : NULL;
    sub.cf = NAME(bnf_coefs_at)(k->cf, lo);
    sub.r0 = k->r0 ? k->r0 + lo : NULL;
    sub.r1 = k->r1 ? k->r1 + lo : NULL;
    sub.r2 = k->r2 ? k->r2 + lo : NULL;
    return s->one(&sub);
}

/* runs [lo, hi), their results (if any) into the thread's part */
static int NAME(runs_task)(void *ctx, ptrdiff_t lo, ptrdiff_t hi, double *part)
{
    const NAME(split) *s = ctx;
    const NAME(job) *k = s->k;
    NAME(job) sub = *k;
    sub.p.n1 = hi - lo;
    sub.x = k->x + lo * k->p.x.s1;
    sub.dy = k->dy ? k->dy + lo * k->p.dy.s1 : NULL;
    sub.y = k->y ? k->y + lo * k->p.y.s1 : NULL;
    sub.z = k->z ? k->z + lo * k->p.z.s1 : NULL;
    sub.r0 = part;
    sub.r1 = part ? part + k->p.n2 : NULL;
    sub.r2 = part && s->lo ? part + 2 * k->p.n2 : NULL;
    return s->one(&sub);
}

/* a reduction (stats1, bwd_reduce1) into k->r0, k->r1: partials merged
   by merge (internal.h) */
static int NAME(reduce)(const NAME(job) *k, int (*one)(const NAME(job) *),
                        int merge)
{
    const bnf_panel *p = &k->p;
    int nt = bnf_threads_for(p->n1 * p->n2 * p->len * (ptrdiff_t)sizeof(T));
    int lo = merge == BNF_MERGE_MOMENTS;
    NAME(split) s = {k, one, lo};
    int rows = p->len == 1 && p->x.s2 == 1;
    if (nt > 1 && (rows ? p->n2 >= 16 * nt : p->n2 >= nt)) {
        bnf_split by_channel = {.nt = nt,
                                .n = p->n2,
                                .align = rows ? 16 : 1,
                                .task = NAME(channels_task),
                                .ctx = &s};
        return bnf_run(&by_channel);
    }
    if (nt < 2 || p->n1 < nt)
        return one(k);
    bnf_split by_runs = {.nt = nt,
                         .n = p->n1,
                         .task = NAME(runs_task),
                         .ctx = &s,
                         .per = (2 + lo) * p->n2,
                         .merge = merge,
                         .k = 2 + lo,
                         .m = p->n2,
                         .weight = (double)p->len,
                         .out = {k->r0, k->r1, k->r2}};
    return bnf_run(&by_runs);
}

/* an element-wise pass (apply1, bwd_apply1) */
static int NAME(map)(const NAME(job) *k, int (*one)(const NAME(job) *))
{
    const bnf_panel *p = &k->p;
    int nt = bnf_threads_for(p->n1 * p->n2 * p->len * (ptrdiff_t)sizeof(T));
    NAME(split) s = {k, one, 0};
    if (nt > 1 && p->n1 >= nt) {
        bnf_split by_runs = {
            .nt = nt, .n = p->n1, .task = NAME(runs_task), .ctx = &s};
        return bnf_run(&by_runs);
    }
    if (nt > 1 && p->n2 >= nt) {
        bnf_split by_channel = {
            .nt = nt, .n = p->n2, .task = NAME(channels_task), .ctx = &s};
        return bnf_run(&by_channel);
    }
    return one(k);
}

/* The C coefficients of n channels (internal.h) from their double
   values, in one new buffer (NULL when out of memory; free it): mean
   split into mh + ml, and any of the others that is not NULL. */
/* want_b: the shift b is wanted (the apply, and the fused ReLU's mask);
   b NULL then means beta = 0 (bnf_params: beta NULL, affine-free) */
static C *NAME(coefs_new)(ptrdiff_t n, NAME(bnf_coefs) *cf, const double *mean,
                          const double *a, const double *b, int want_b,
                          const double *is, const double *k_xhat,
                          const double *k_0)
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
    if (want_b && b == NULL) { /* beta = 0 */
        dst[1] = buf + 3 * n1;
        for (ptrdiff_t j = 0; j < n; j++)
            dst[1][j] = (C)0;
    }
    C *mh = buf, *ml = buf + n1;
    for (ptrdiff_t j = 0; j < n; j++) {
        mh[j] = (C)mean[j];
        ml[j] = bnf_isfinite((double)mh[j]) ? (C)(mean[j] - (double)mh[j])
                                            : (C)0;
    }
    /* the apply's shift with the low part of the mean folded in:
       (x - mean) * a + b = (x - mh) * a + (b - ml * a) */
    if (HILO && a != NULL && dst[1] != NULL)
        for (ptrdiff_t j = 0; j < n; j++)
            dst[1][j] = (C)((b ? b[j] : 0.0) - (double)ml[j] * a[j]);
    cf->mh = mh;
    cf->ml = HILO ? ml : NULL;
    cf->a = dst[0];
    cf->b = dst[1];
    cf->is = dst[2];
    cf->k_xhat = dst[3];
    cf->k_0 = dst[4];
    return buf;
}

int NAME(bn_stats)(const bnf_panel *p, const bnf_params *q, const T *x,
                   bnf_results *r)
{
    (void)q;
    NAME(job) k = {*p, x, NULL, NULL, {0}, 0, r->mean, r->m2, r->mean_lo};
    return NAME(reduce)(&k, NAME(stats1), BNF_MERGE_MOMENTS);
}

/* y = (x - mean) * (gamma * invstd) + beta, the coefficients rounded
   once to C */
int NAME(bn_apply)(const bnf_panel *p, const bnf_params *q, const T *x, T *y)
{
    ptrdiff_t n2 = p->n2;
    double *scale = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (scale == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++)
        scale[j] = BNF_GAMMA(q->gamma, j) * q->invstd[j];
    NAME(job) k = {*p, x, NULL, y, {0}, q->relu, NULL, NULL};
    /* the residual: z, or in place (y itself) */
    k.res = q->residual != NULL;
    k.z = q->residual == (const void *)y ? NULL : (const T *)q->residual;
    C *buf = NAME(coefs_new)(n2, &k.cf, q->mean, scale, q->beta, 1, NULL, NULL,
                             NULL);
    free(scale);
    if (buf == NULL)
        return BNF_ENOMEM;
    int rc = NAME(map)(&k, NAME(apply1));
    free(buf);
    return rc;
}

int NAME(bn_forward_train)(const bnf_panel *p, const bnf_params *q, const T *x,
                           T *y, bnf_results *r)
{
    bnf_results st = {0};
    st.mean = r->mean;
    st.m2 = r->var;
    if (NAME(bn_stats)(p, q, x, &st) != BNF_OK)
        return BNF_ENOMEM;
    double count = (double)p->n1 * (double)p->len;
    for (ptrdiff_t j = 0; j < p->n2; j++) {
        r->var[j] /= count; /* M2 -> biased variance */
        r->invstd[j] = 1.0 / sqrt(r->var[j] + q->eps);
    }
    /* squares out of range: the channel again, scaled (extremes_tmpl.h) */
    int any = bnf_any_suspect(r->mean, r->var, p->n2, q->eps, BNF_TINY_VAR(C));
    for (ptrdiff_t j = 0; BNF_RARELY(any) && j < p->n2; j++)
        if (bnf_suspect(r->mean[j], r->var[j], q->eps, BNF_TINY_VAR(C)))
            NAME(rescue_moments)(x + j * p->x.s2, p->n1, p->x.s1, p->len,
                                 q->eps, &r->mean[j], &r->var[j],
                                 &r->invstd[j]);
    bnf_params a = *q;
    a.mean = r->mean;
    a.invstd = r->invstd;
    return NAME(bn_apply)(p, &a, x, y);
}

int NAME(bn_forward_test)(const bnf_panel *p, const bnf_params *q, const T *x,
                          T *y)
{
    ptrdiff_t n2 = p->n2;
    double *is = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (is == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++)
        is[j] = 1.0 / sqrt(q->var[j] + q->eps);
    bnf_params a = *q;
    a.invstd = is;
    int rc = NAME(bn_apply)(p, &a, x, y);
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
 *
 * Frozen statistics (q->frozen: a 'test' mode forward, mean and invstd
 * from the running statistics, constants): dgamma and dbeta as above
 * (the same reduce), dx = a * g (the apply pass with k_xhat NULL: no
 * terms through the batch's mean and variance; count not read).
 */
int NAME(bn_backward_reduce)(const bnf_panel *p, const bnf_params *q,
                             const T *x, const T *dy, bnf_results *r)
{
    ptrdiff_t n2 = p->n2;
    double *a = NULL;
    if (q->relu) {
        a = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
        if (a == NULL)
            return BNF_ENOMEM;
        for (ptrdiff_t j = 0; j < n2; j++) /* as the forward's scale */
            a[j] = BNF_GAMMA(q->gamma, j) * q->invstd[j];
    }
    NAME(job) k = {*p, x, dy, NULL, {0}, q->relu, r->sum_dy, r->sum_dyxmu};
    C *buf = NAME(coefs_new)(n2, &k.cf, q->mean, a, q->relu ? q->beta : NULL,
                             q->relu, NULL, NULL, NULL);
    free(a);
    if (buf == NULL)
        return BNF_ENOMEM;
    int rc = NAME(reduce)(&k, NAME(bwd_reduce1), BNF_MERGE_SUMS);
    free(buf);
    return rc;
}

int NAME(bn_residual_gate)(const bnf_panel *p, const bnf_params *q, const T *x,
                           const T *dy, T *g, bnf_results *r)
{
    ptrdiff_t n2 = p->n2;
    double *a = malloc((size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (a == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++)
        a[j] = BNF_GAMMA(q->gamma, j) * q->invstd[j]; /* as the forward's */
    NAME(job) k = {*p, x, dy, g, {0}, 1, NULL, NULL};
    k.z = (const T *)q->residual;
    k.res = 1;
    C *buf = NAME(coefs_new)(n2, &k.cf, q->mean, a, q->beta, 1, NULL, NULL,
                             NULL);
    free(a);
    if (buf == NULL)
        return BNF_ENOMEM;
    int rc;
    if (r != NULL && NAME(across_rows)(&k, 1, 1) && p->z.s2 == 1) {
        /* the gate in the reduce's pass */
        k.r0 = r->sum_dy;
        k.r1 = r->sum_dyxmu;
        rc = NAME(reduce)(&k, NAME(gate_reduce1), BNF_MERGE_SUMS);
        free(buf);
        return rc;
    }
    rc = NAME(map)(&k, NAME(gate1));
    free(buf);
    if (rc != BNF_OK || r == NULL)
        return rc;
    /* along runs: the sums of g in a pass of their own */
    bnf_panel pg = *p;
    pg.dy = p->y;
    bnf_params qg = *q;
    qg.relu = 0;
    qg.residual = NULL;
    return NAME(bn_backward_reduce)(&pg, &qg, x, g, r);
}

/* bn_backward_apply, with sgx (non-NULL) the sums of g * xhat given
   instead of sum_dyxmu * invstd */
static int NAME(backward_apply)(const bnf_panel *p, const bnf_params *q,
                                const T *x, const T *dy, T *dx, bnf_results *r,
                                const double *sgx_of)
{
    ptrdiff_t n2 = p->n2;
    const double *invstd = q->invstd, *sum_dy = q->sum_dy;
    const double *sum_dyxmu = q->sum_dyxmu;
    double *k3 = malloc(3 * (size_t)(n2 > 0 ? n2 : 1) * sizeof(double));
    if (k3 == NULL)
        return BNF_ENOMEM;
    double *k_dy = k3, *k_xhat = k3 + n2, *k_0 = k3 + 2 * n2;
    for (ptrdiff_t j = 0; j < n2; j++) {
        /* a, as the forward's scale */
        double a = BNF_GAMMA(q->gamma, j) * invstd[j];
        double sg = sum_dy[j];
        double sgx = sgx_of ? sgx_of[j] : sum_dyxmu[j] * invstd[j];
        k_dy[j] = a;
        k_xhat[j] = -a * sgx / q->count;
        /* from a rounded to C: with one value per channel a * g in C and
           -a * sg in double round alike, and dx is exactly 0 */
        k_0[j] = -(double)(C)a * sg / q->count;
    }
    NAME(job) k = {*p, x, dy, dx, {0}, q->relu, NULL, NULL};
    /* frozen statistics: no k_xhat, k_0 (dx = a * g, bnf_params) */
    C *buf = NAME(coefs_new)(
        n2, &k.cf, q->mean, k_dy, q->relu ? q->beta : NULL, q->relu, invstd,
        q->frozen ? NULL : k_xhat, q->frozen ? NULL : k_0);
    free(k3);
    if (buf == NULL)
        return BNF_ENOMEM;
    for (ptrdiff_t j = 0; j < n2; j++) {
        double sg = sum_dy[j];
        r->dgamma[j] = sgx_of ? sgx_of[j]
                              : sum_dyxmu[j] * invstd[j]; /* sum g*xhat */
        r->dbeta[j] = sg; /* after dgamma: dbeta may alias sum_dy, dgamma
                             sum_dyxmu */
    }
    int rc = NAME(map)(&k, NAME(bwd_apply1));
    free(buf);
    return rc;
}

int NAME(bn_backward_apply)(const bnf_panel *p, const bnf_params *q,
                            const T *x, const T *dy, T *dx, bnf_results *r)
{
    return NAME(backward_apply)(p, q, x, dy, dx, r, NULL);
}

/* The sums of g * xhat (sgx) from the sums of bn_backward_reduce, some
   of which are not finite (products out of range: x - mean of ~1e308, or
   C sums of float32 past ~3e38): those channels again in double, scaled
   (extremes_tmpl.h), their sum g into sum_dy. */
static int NAME(rescue_sgx)(const bnf_panel *p, const bnf_params *q,
                            const T *x, const T *dy, double *sum_dy,
                            const double *sum_dyxmu, double *sgx)
{
    ptrdiff_t n2 = p->n2;
    for (ptrdiff_t j = 0; j < n2; j++)
        sgx[j] = sum_dyxmu[j] * q->invstd[j];
    NAME(bnf_coefs) cf = {0};
    C *buf = NULL;
    if (q->relu) { /* the forward's mask: its coefficients, as the
                      reduce's */
        double *a = malloc((size_t)n2 * sizeof(double));
        if (a != NULL) {
            for (ptrdiff_t j = 0; j < n2; j++)
                a[j] = BNF_GAMMA(q->gamma, j) * q->invstd[j];
            buf = NAME(coefs_new)(n2, &cf, q->mean, a, q->beta, 1, NULL, NULL,
                                  NULL);
        }
        free(a);
        if (buf == NULL)
            return BNF_ENOMEM;
    }
    for (ptrdiff_t j = 0; j < n2; j++) {
        if (bnf_isfinite(sum_dyxmu[j]) && bnf_isfinite(sum_dy[j]))
            continue;
        NAME(bnf_coefs) cj = NAME(bnf_coefs_at)(cf, j);
        double sg, sx;
        if (NAME(rescue_bwd_sums)(dy + j * p->dy.s2, p->dy.s1, x + j * p->x.s2,
                                  p->x.s1, p->n1, p->len, q->mean[j],
                                  q->invstd[j], NULL, q->relu ? &cj : NULL,
                                  &sg, &sx)) {
            sum_dy[j] = sg;
            sgx[j] = sx;
        }
    }
    free(buf);
    return BNF_OK;
}

int NAME(bn_backward)(const bnf_panel *p, const bnf_params *q, const T *x,
                      const T *dy, T *dx, bnf_results *r)
{
    /* the sums land in dbeta and dgamma, which bn_backward_apply
       overwrites in place */
    bnf_results sums = {0};
    sums.sum_dy = r->dbeta;
    sums.sum_dyxmu = r->dgamma;
    int rc = NAME(bn_backward_reduce)(p, q, x, dy, &sums);
    if (rc != BNF_OK)
        return rc;
    bnf_params a = *q;
    a.count = (double)p->n1 * (double)p->len;
    a.sum_dy = r->dbeta;
    a.sum_dyxmu = r->dgamma;
    int any = 0;
    for (ptrdiff_t j = 0; j < p->n2; j++)
        any |= !(bnf_isfinite(r->dgamma[j]) && bnf_isfinite(r->dbeta[j]));
    if (!any)
        return NAME(backward_apply)(p, &a, x, dy, dx, r, NULL);
    double *sgx = malloc((size_t)p->n2 * sizeof(double));
    rc = sgx == NULL ? BNF_ENOMEM
                     : NAME(rescue_sgx)(p, q, x, dy, r->dbeta, r->dgamma, sgx);
    if (rc == BNF_OK)
        rc = NAME(backward_apply)(p, &a, x, dy, dx, r, sgx);
    free(sgx);
    return rc;
}
