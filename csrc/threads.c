/* The thread count of the kernels (OpenMP builds), the rule that keeps
   small jobs on one thread, forked children, and the per-thread split and
   merge of every entry point (bnf_run, internal.h).

   The count of a call (bnf_get_num_threads), in order of precedence:
   * a forked child: 1 (see below);
   * bnf_set_num_threads(n), n >= 1 (bnfast.set_num_threads, and
     BNFAST_NUM_THREADS at import);
   * else OpenMP's own: omp_get_max_threads() of the calling thread, which
     is what OMP_NUM_THREADS and threadpoolctl (omp_set_num_threads) set,
     else the cores the process may run on;
   always at most BNF_MAX_THREADS, and at most what could be created (a
   probe, below).  The lookup runs only for jobs over the parallel
   threshold: small calls pay nothing for it.

   fork(): GNU OpenMP's pool of threads does not survive fork(), and a
   child's first parallel region waits forever for the parent's threads.
   An at-fork handler makes a child serial; set_num_threads in the child
   lifts that, unless a parallel region had run before the fork (in this
   process or an ancestor: bnf_went_parallel is inherited), in which case
   the child stays serial for good (bnf_set_num_threads returns 1 and the
   Python side warns).

   Thread creation: libgomp exits the process when it cannot create a
   thread.  Before the first parallel region of t threads, t larger than
   any before, t - 1 plain threads (the caller is the t-th) are created,
   alive at once, and joined (once per new count: microseconds a thread);
   if some cannot be, the count is capped for good at half of the threads
   that could be, leaving room for the rest of the process.  The plain
   threads get the default attributes, as libgomp's do unless
   OMP_STACKSIZE is set. */
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdlib.h>
#include <string.h>

#include "bnfast.h"
#include "internal.h"

#if BNF_HAVE_OPENMP
#include <omp.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define BNF_HAVE_PTHREAD 1
#endif
#endif

/* the flags and counts below are read by calls that run without the GIL
   while another thread may set them: relaxed atomics (plain loads and
   stores on x86-64) */
#if defined(__GNUC__)
#define BNF_LOAD(v) __atomic_load_n(&(v), __ATOMIC_RELAXED)
#define BNF_STORE(v, x) __atomic_store_n(&(v), (x), __ATOMIC_RELAXED)
#else
#define BNF_LOAD(v) (v)
#define BNF_STORE(v, x) ((v) = (x))
#endif

static int bnf_num_threads = 0;   /* 0: OpenMP's count */
static int bnf_fork_serial = 0;   /* a forked child, not yet told */
static int bnf_fork_poisoned = 0; /* forked after a parallel region */
static int bnf_threads_cap = BNF_MAX_THREADS;
#if BNF_HAVE_OPENMP
static int bnf_went_parallel = 0; /* a parallel region ran */
#endif
#if BNF_HAVE_PTHREAD
static int bnf_threads_known = 1; /* so many were created at once */
#endif

int bnf_set_num_threads(int n)
{
    n = n < 0 ? 0 : n > BNF_MAX_THREADS ? BNF_MAX_THREADS : n;
    BNF_STORE(bnf_num_threads, n);
    if (!BNF_LOAD(bnf_fork_poisoned)) {
        BNF_STORE(bnf_fork_serial, 0);
        return 0;
    }
    return n > 1;
}

int bnf_get_num_threads(void)
{
#if BNF_HAVE_OPENMP
    if (BNF_LOAD(bnf_fork_serial))
        return 1;
    int n = BNF_LOAD(bnf_num_threads);
    if (n == 0)
        n = omp_get_max_threads();
    int cap = BNF_LOAD(bnf_threads_cap);
    return n < 1 ? 1 : n > cap ? cap : n;
#else
    return 1;
#endif
}

void bnf_get_thread_state(int state[4])
{
    state[0] = BNF_LOAD(bnf_num_threads);
    state[1] = BNF_LOAD(bnf_fork_serial);
    state[2] = BNF_LOAD(bnf_fork_poisoned);
    state[3] = BNF_LOAD(bnf_threads_cap);
}

int bnf_have_openmp(void) { return BNF_HAVE_OPENMP; }

#if BNF_HAVE_PTHREAD
static pthread_mutex_t bnf_probe_lock = PTHREAD_MUTEX_INITIALIZER;

static void bnf_atfork_prepare(void) { pthread_mutex_lock(&bnf_probe_lock); }

static void bnf_atfork_parent(void) { pthread_mutex_unlock(&bnf_probe_lock); }

static void bnf_atfork_child(void)
{
    pthread_mutex_unlock(&bnf_probe_lock);
    bnf_fork_serial = 1;
    if (bnf_went_parallel)
        bnf_fork_poisoned = 1;
}

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t go;
    int released;
} bnf_probe_gate;

static void *bnf_probe_wait(void *arg)
{
    bnf_probe_gate *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->released)
        pthread_cond_wait(&g->go, &g->lock);
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* How many of k threads (default attributes, as libgomp's without
   OMP_STACKSIZE) could be alive at once. */
static int bnf_probe(int k)
{
    pthread_t *t = malloc((size_t)k * sizeof *t);
    if (t == NULL)
        return 0;
    bnf_probe_gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        0};
    int made = 0;
    while (made < k && pthread_create(&t[made], NULL, bnf_probe_wait, &g) == 0)
        made++;
    pthread_mutex_lock(&g.lock);
    g.released = 1;
    pthread_cond_broadcast(&g.go);
    pthread_mutex_unlock(&g.lock);
    for (int i = 0; i < made; i++)
        pthread_join(t[i], NULL);
    free(t);
    return made;
}

/* t, or fewer if t threads cannot be created */
static int bnf_creatable(int t)
{
    if (t <= __atomic_load_n(&bnf_threads_known, __ATOMIC_ACQUIRE))
        return t;
    pthread_mutex_lock(&bnf_probe_lock);
    if (t > bnf_threads_known && t <= bnf_threads_cap) {
        int made = bnf_probe(t - 1) + 1; /* and the calling thread */
        if (made >= t) {
            __atomic_store_n(&bnf_threads_known, t, __ATOMIC_RELEASE);
        } else {
            int cap = made / 2 > 1 ? made / 2 : 1;
            if (cap < bnf_threads_known)
                cap = bnf_threads_known;
            BNF_STORE(bnf_threads_cap, cap);
            __atomic_store_n(&bnf_threads_known, cap, __ATOMIC_RELEASE);
        }
    }
    int cap = bnf_threads_cap;
    pthread_mutex_unlock(&bnf_probe_lock);
    return t < cap ? t : cap;
}
#else
static int bnf_creatable(int t) { return t; }
#endif

void bnf_threads_init(void)
{
#if BNF_HAVE_PTHREAD
    static int done = 0;
    if (!done) {
        done = 1;
        pthread_atfork(bnf_atfork_prepare, bnf_atfork_parent,
                       bnf_atfork_child);
    }
#endif
}

static ptrdiff_t bnf_parallel_min = BNF_PARALLEL_MIN;

void bnf_set_parallel_min(ptrdiff_t bytes)
{
    bnf_parallel_min = bytes < 2 ? 2 : bytes;
}

ptrdiff_t bnf_get_parallel_min(void) { return bnf_parallel_min; }

int bnf_threads_for(ptrdiff_t bytes)
{
    ptrdiff_t min = bnf_parallel_min;
    if (bytes < min)
        return 1;
    int t = bnf_get_num_threads();
    if (t <= 1)
        return 1;
    ptrdiff_t most = bytes / (min / 2);
    return bnf_creatable(most < t ? (int)most : t);
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
    /* mean rounded as when the low parts are not wanted; out[2] (if
       wanted) gets what that rounding left, mean + out[2] a normalized
       pair */
    double *keep = s->out[2];
    for (ptrdiff_t j = 0; mlo != NULL && j < m; j++) {
        double e, l = bnf_isfinite(mlo[j]) ? mlo[j] : 0.0;
        mean[j] = bnf_two_sum(mean[j], l, &e);
        if (keep != NULL)
            keep[j] = e;
    }
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
        if (!BNF_LOAD(bnf_went_parallel))
            BNF_STORE(bnf_went_parallel, 1);
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : rc)
#endif
        for (int t = 0; t < nt; t++) {
            ptrdiff_t lo, hi;
            bnf_part(s->n, nt, t, align, &lo, &hi);
            int r = s->task(s->ctx, lo, hi,
                            scratch ? scratch + t * per : NULL);
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
