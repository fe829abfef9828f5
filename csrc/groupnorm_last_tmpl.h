/* Template body of the channels-last group norm entry points (gnl_*);
   included by groupnorm_last.c once per dtype through instantiate.h (T the
   storage type, C the compute type, NAME(f) the name).

   x is n samples, each an (hw, c) row-major panel (channels adjacent, rows
   ld elements apart; (N, H, W, C) images and any rank with channels
   last), samples xs elements apart.  Group k of a sample is its columns
   [k*cg, (k+1)*cg), cg = c/g: hw rows of cg adjacent values.  No
   transposing copy: each sample goes through the across-rows kernels
   (rows_tmpl.h), which sum per column over the rows with the inner loop
   along the row (vectorized); the cg columns of a group are then combined
   in double, O(c) work per sample:
     mean = m0 + sum_j d_j / cg, d_j = (m_j - m0) + (lo_j - lo0)
     M2   = sum_j M2_j + hw * sum_j (d_j - mean_d)**2
   (m_j, lo_j, M2_j the column's mean, its low part and M2 from
   rows_stats; m0 the group's first column: a constant group keeps its
   value exactly, and an offset of 1e4 times the spread cancels in the
   differences, not in the sum).  The apply pass is a per-column affine
   map (rows_apply) with the group's mean and gamma_ch / std, as the NCHW
   kernels (groupnorm_tmpl.h); the backward is their per-group arithmetic
   on column sums (rows_bwd_reduce, rows_bwd_apply).  Suspect groups
   (squares out of range) are computed again by the rescue kernels
   (extremes_tmpl.h) on the group's strided block. */

/* Samples [i0, i1) of the forward; work: 4*c doubles and 4*c C values. */
static int NAME(gnl_forward1)(const T *x, ptrdiff_t i0, ptrdiff_t i1,
                              ptrdiff_t c, ptrdiff_t g, ptrdiff_t hw,
                              ptrdiff_t xs, ptrdiff_t xld, const double *gamma,
                              const double *beta, double eps, T *y,
                              ptrdiff_t ys, ptrdiff_t yld, double *mean,
                              double *invstd, double *work)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *cm = work, *cq = work + c, *cl = work + 2 * c, *gv = work + 3 * c;
    C *mh = (C *)(work + 4 * c), *ml = mh + c, *a = ml + c, *b = a + c;
    NAME(bnf_coefs) cf = {mh, HILO ? ml : NULL, a, b, NULL, NULL, NULL};
    double dhw = (double)hw, dcg = (double)cg;
    for (ptrdiff_t i = i0; i < i1; i++) {
        const T *xi = x + i * xs;
        int rc = NAME(rows_stats)(xi, hw, c, xld, cm, cq, cl);
        if (rc != BNF_OK)
            return rc;
        for (ptrdiff_t k = 0; k < g; k++) {
            ptrdiff_t j0 = k * cg;
            double m0 = cm[j0], l0 = cl[j0], s = 0.0, q = 0.0, v = 0.0;
            for (ptrdiff_t j = j0; j < j0 + cg; j++)
                s += (cm[j] - m0) + (cl[j] - l0);
            double dm = s / dcg;
            for (ptrdiff_t j = j0; j < j0 + cg; j++) {
                double dev = ((cm[j] - m0) + (cl[j] - l0)) - dm;
                q += cq[j];
                v += dev * dev;
            }
            double mu = m0 + (dm + l0);
            if (BNF_RARELY(!bnf_isfinite(mu))) {
                /* an Inf column: the plain average (+Inf, as np.mean) */
                mu = 0.0;
                for (ptrdiff_t j = j0; j < j0 + cg; j++)
                    mu += cm[j] / dcg;
            }
            mean[i * g + k] = mu;
            gv[k] = (q + dhw * v) / (double)m;
            invstd[i * g + k] = 1.0 / sqrt(gv[k] + eps);
        }
        /* squares out of range: the group again, scaled
           (extremes_tmpl.h) */
        int any = 0;
        for (ptrdiff_t k = 0; k < g; k++)
            any |= bnf_suspect(mean[i * g + k], gv[k], eps, BNF_TINY_VAR(C));
        for (ptrdiff_t k = 0; BNF_RARELY(any) && k < g; k++)
            if (bnf_suspect(mean[i * g + k], gv[k], eps, BNF_TINY_VAR(C)))
                NAME(rescue_moments)(xi + k * cg, hw, xld, cg, eps,
                                     &mean[i * g + k], &gv[k],
                                     &invstd[i * g + k]);
        for (ptrdiff_t ch = 0; ch < c; ch++) {
            ptrdiff_t k = i * g + ch / cg;
            double ak = BNF_GAMMA(gamma, ch) * invstd[k];
            NAME(gn_split)(mean[k], &mh[ch], &ml[ch]);
            a[ch] = (C)ak;
            b[ch] = (C)(BNF_BETA(beta, ch) - (double)ml[ch] * ak);
        }
        NAME(rows_apply)(xi, hw, c, xld, cf, y + i * ys, yld, 0);
    }
    return BNF_OK;
}

/* The entry points split the samples among threads (bnf_run), as the
   NCHW ones (groupnorm_tmpl.h). */
static int NAME(gnl_forward_samples)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                     double *part)
{
    const NAME(gn_job) *j = ctx;
    const bnf_panel *p = j->p;
    const bnf_params *q = j->q;
    return NAME(gnl_forward1)(j->x, i0, i1, p->n2, q->groups, p->len, p->x.s1,
                              p->x.s2, q->gamma, q->beta, q->eps, j->y,
                              p->y.s1, p->y.s2, j->r->mean, j->r->invstd,
                              part);
}

int NAME(gnl_forward)(const bnf_panel *p, const bnf_params *q, const T *x,
                      T *y, bnf_results *r)
{
    /* per thread: 4*c doubles, 4*c C values (<= 4*c doubles) */
    return NAME(gn_launch)(p, q, x, NULL, y, r, NAME(gnl_forward_samples),
                           8 * p->n2);
}

/*
 * The backward of groupnorm_tmpl.h's gn_backward1 (same formulas, same
 * sums of dgamma and dbeta over samples), its column sums from
 * rows_bwd_reduce and dx from rows_bwd_apply.  Samples [i0, i1); work:
 * 9*c doubles and 6*c C values.
 */
#define GN_SUM (HILO ? BNF_SUM_ROWS : BNF_FLUSH)
static int NAME(gnl_backward1)(const T *dy, ptrdiff_t ds, ptrdiff_t dld,
                               const T *x, ptrdiff_t xs, ptrdiff_t xld,
                               ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t c,
                               ptrdiff_t g, ptrdiff_t hw, const double *mean,
                               const double *invstd, const double *gamma,
                               T *dx, ptrdiff_t ts, ptrdiff_t tld,
                               double *dgamma, double *dbeta, double *work)
{
    ptrdiff_t cg = c / g, m = cg * hw;
    double *s1 = work, *s2 = work + c;
    double *k_dy = work + 2 * c, *k_xhat = work + 3 * c, *k_0 = work + 4 * c;
    double *bg = work + 5 * c, *bb = work + 6 * c; /* the block's sums */
    C *mh = (C *)(work + 7 * c), *ml = mh + c, *a = ml + c, *is = a + c;
    C *kx = is + c, *k0 = kx + c;
    double *lg = work + 13 * c, *lb = work + 14 * c; /* float64: low parts */
    NAME(bnf_coefs) cf = {mh, HILO ? ml : NULL, a, NULL, is, kx, k0};
    for (ptrdiff_t ch = 0; ch < c; ch++)
        dgamma[ch] = dbeta[ch] = bg[ch] = bb[ch] = lg[ch] = lb[ch] = 0.0;
    double dm = (double)m;
    for (ptrdiff_t i = i0; i < i1; i++) {
        const T *gi = dy + i * ds, *xi = x + i * xs;
        for (ptrdiff_t ch = 0; ch < c; ch++)
            NAME(gn_split)(mean[i * g + ch / cg], &mh[ch], &ml[ch]);
        int rc = NAME(rows_bwd_reduce)(gi, dld, xi, xld, hw, c, cf, 0, s1, s2);
        if (rc != BNF_OK)
            return rc;
        for (ptrdiff_t k = 0; k < g; k++) {
            double isk = invstd[i * g + k], sa = 0.0, sb = 0.0;
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                /* as a_ch */
                k_dy[ch] = (double)(C)(isk * BNF_GAMMA(gamma, ch));
                double st[2]; /* sum dy, sum dy * xhat */
                if (BNF_RARELY(
                        !(bnf_isfinite(s1[ch]) && bnf_isfinite(s2[ch]))) &&
                    NAME(rescue_bwd_sums)(gi + ch, dld, xi + ch, xld, hw, 1,
                                          mean[i * g + k], isk, NULL, NULL,
                                          &st[0], &st[1])) {
                    sa += k_dy[ch] * st[0];
                    sb += (k_dy[ch] / isk) * st[1];
                    bb[ch] += st[0];
                    bg[ch] += st[1];
                    continue;
                }
                sa += k_dy[ch] * s1[ch];
                sb += k_dy[ch] * s2[ch];
                bb[ch] += s1[ch];
                bg[ch] += isk * s2[ch];
            }
            for (ptrdiff_t ch = k * cg; ch < (k + 1) * cg; ch++) {
                k_0[ch] = -sa / dm;
                k_xhat[ch] = -isk * sb / dm;
                a[ch] = (C)k_dy[ch];
                is[ch] = (C)isk;
                kx[ch] = (C)k_xhat[ch];
                k0[ch] = (C)k_0[ch];
            }
        }
        NAME(rows_bwd_apply)(gi, dld, xi, xld, hw, c, cf, 0, dx + i * ts, tld);
        if ((i - i0 + 1) % GN_SUM == 0 || i == i1 - 1)
            NAME(gn_add_block)(c, bg, bb, dgamma, dbeta, lg, lb);
    }
    for (ptrdiff_t ch = 0; !HILO && ch < c; ch++) {
        dgamma[ch] += lg[ch];
        dbeta[ch] += lb[ch];
    }
    return BNF_OK;
}

#undef GN_SUM

/* samples [i0, i1); part: their dgamma and dbeta, then their scratch */
static int NAME(gnl_backward_samples)(void *ctx, ptrdiff_t i0, ptrdiff_t i1,
                                      double *part)
{
    const NAME(gn_job) *j = ctx;
    const bnf_panel *p = j->p;
    const bnf_params *q = j->q;
    ptrdiff_t c = p->n2;
    return NAME(gnl_backward1)(j->dy, p->dy.s1, p->dy.s2, j->x, p->x.s1,
                               p->x.s2, i0, i1, c, q->groups, p->len, q->mean,
                               q->invstd, q->gamma, j->y, p->y.s1, p->y.s2,
                               part, part + c, part + 2 * c);
}

int NAME(gnl_backward)(const bnf_panel *p, const bnf_params *q, const T *x,
                       const T *dy, T *dx, bnf_results *r)
{
    /* per thread: dgamma and dbeta, 7*c doubles, 6*c C values (<= 6*c
       doubles), 2*c doubles */
    return NAME(gn_launch)(p, q, x, dy, dx, r, NAME(gnl_backward_samples),
                           17 * p->n2);
}
