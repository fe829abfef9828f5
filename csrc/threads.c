/* The thread count of the kernels (OpenMP builds), the rule that keeps
   small jobs on one thread, and the per-thread split and merge of every
   entry point (bnf_run, internal.h). */
#include <stdlib.h>
#include <string.h>

#include "bnfast.h"
#include "internal.h"

static int bnf_num_threads = 1;

void bnf_set_num_threads(int n) { bnf_num_threads = n < 1 ? 1 : n; }

int bnf_get_num_threads(void)
{
#if BNF_HAVE_OPENMP
    return bnf_num_threads;
#else
    return 1;
#endif
}

int bnf_have_openmp(void) { return BNF_HAVE_OPENMP; }

static ptrdiff_t bnf_parallel_min = BNF_PARALLEL_MIN;

void bnf_set_parallel_min(ptrdiff_t bytes)
{
    bnf_parallel_min = bytes < 2 ? 2 : bytes;
}

ptrdiff_t bnf_get_parallel_min(void) { return bnf_parallel_min; }

int bnf_threads_for(ptrdiff_t bytes)
{
    int t = bnf_get_num_threads();
    ptrdiff_t min = bnf_parallel_min;
    if (t <= 1 || bytes < min)
        return 1;
    ptrdiff_t most = bytes / (min / 2);
    return most < t ? (int)most : t;
}

/* out[a] = 0 + the threads' partials in thread order */
static void bnf_merge_sums(const bnf_split *s, int nt, const double *scratch)
{
    for (int a = 0; a < s->k; a++) {
        double *out = s->out[a];
        const double *part = scratch + a * s->m;
        for (ptrdiff_t j = 0; j < s->m; j++) {
            out[j] = 0.0;
            for (int t = 0; t < nt; t++)
                out[j] += part[t * s->per + j];
        }
    }
}

/* (mean, M2) of the threads' (mean, M2) pairs, Chan's merge in thread
   order.  With the means' low parts (k == 3; the first part's are the
   running ones, updated in place), the merge keeps each mean as a pair
   hi + lo: a difference of means then carries no rounding at the scale of
   the means, only at that of the difference. */
static void bnf_merge_moments(const bnf_split *s, int nt, double *scratch)
{
    ptrdiff_t m = s->m, align = s->align > 0 ? s->align : 1, lo, hi;
    bnf_part(s->n, nt, 0, align, &lo, &hi);
    double na = (double)(hi - lo) * s->weight;
    double *mean = s->out[0], *m2 = s->out[1];
    double *mlo = s->k > 2 ? scratch + 2 * m : NULL;
    memcpy(mean, scratch, (size_t)m * sizeof(double));
    memcpy(m2, scratch + m, (size_t)m * sizeof(double));
    for (int t = 1; t < nt; t++) {
        const double *part = scratch + t * s->per;
        bnf_part(s->n, nt, t, align, &lo, &hi);
        double nb = (double)(hi - lo) * s->weight;
        if (mlo == NULL) {
            bnf_chan_merge(m, na, nb, part, part + m, mean, m2);
        } else {
            double n = na + nb, wa = na / n, wb = nb / n, wab = na * wb;
            const double *pl = part + 2 * m;
            for (ptrdiff_t j = 0; j < m; j++) {
                double e, delta = (part[j] - mean[j]) + (pl[j] - mlo[j]);
                double mu = bnf_two_sum(mean[j], delta * wb, &e);
                m2[j] += part[m + j] + delta * delta * wab;
                if (bnf_isfinite(mu)) {
                    mean[j] = mu;
                    mlo[j] += e;
                } else { /* an Inf in the data: as bnf_chan_merge */
                    mean[j] = mean[j] * wa + part[j] * wb;
                    mlo[j] = 0.0;
                }
            }
        }
        na += nb;
    }
    for (ptrdiff_t j = 0; mlo != NULL && j < m; j++)
        mean[j] += bnf_isfinite(mlo[j]) ? mlo[j] : 0.0;
}

int bnf_run(const bnf_split *s)
{
    int nt = s->nt > 1 ? s->nt : 1, rc = BNF_OK;
    ptrdiff_t align = s->align > 0 ? s->align : 1, per = s->per;
    double *scratch = NULL;
    if (per > 0) {
        scratch = malloc((size_t)nt * (size_t)per * sizeof(double));
        if (scratch == NULL)
            return BNF_ENOMEM;
    }
    if (nt == 1) {
        rc = s->task(s->ctx, 0, s->n, scratch);
    } else {
#if BNF_HAVE_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : rc)
#endif
        for (int t = 0; t < nt; t++) {
            ptrdiff_t lo, hi;
            bnf_part(s->n, nt, t, align, &lo, &hi);
            int r = s->task(s->ctx, lo, hi, scratch ? scratch + t * per : NULL);
            if (r < rc)
                rc = r;
        }
    }
    if (rc == BNF_OK && s->merge == BNF_MERGE_SUMS)
        bnf_merge_sums(s, nt, scratch);
    else if (rc == BNF_OK && s->merge == BNF_MERGE_MOMENTS)
        bnf_merge_moments(s, nt, scratch);
    free(scratch);
    return rc;
}
