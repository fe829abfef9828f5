/*
 * bnfast C API: plain C99 kernels for batch normalization (and layer and
 * group normalization), no Python headers.
 *
 * The entry points are a table per storage dtype (bnf_kernels_for: the
 * kernels of the SIMD level chosen at load, see bnf_simd_*), all of one
 * shape:
 *
 *     int job(const bnf_panel *p, const bnf_params *q,
 *             const void *x, [const void *dy,] [void *y or dx,]
 *             [bnf_results *r]);
 *
 * e.g. bnf_kernels_for(BNF_F32)->bn_forward_train(&p, &q, x, y, &r).  The
 * dtype is the row: BNF_F32 (the data arrays are float), BNF_F64
 * (double), BNF_F16 and BNF_BF16 (uint16_t, the bits of IEEE float16 and
 * of bfloat16, computed as float32 is, results rounded to nearest even);
 * the data arrays come in the order x, dy, then the one output array (y
 * or dx).  Three descriptors:
 * - bnf_panel, the data: its shape and each array's strides, in elements
 *   (ptrdiff_t: arrays over 2**31 elements work);
 * - bnf_params, what the call reads: eps, relu, groups, count and the
 *   per-channel inputs (gamma, beta, given statistics and sums);
 * - bnf_results, the per-channel (per-row, per-group) arrays it writes.
 * A function reads and writes only the fields its comment names; the
 * others may hold anything (zero-initialize the structs: {0}).
 * Per-channel quantities are always double, whatever the data dtype.
 * float64 data is computed in double; float32 data element-wise in
 * float32, with its short sums flushed into double (see instantiate.h):
 * per-channel statistics and every long sum are double.
 *
 * The panel: n2 channels of n1 runs of len contiguous elements; run i of
 * channel j of array a starts at a + i*s1 + j*s2 (the array's strides).
 * - batch norm (bn_*): statistics per channel over its n1*len elements.
 *   len == 1 is the across-rows family (s2 must be 1 for every array: an
 *   (n1, n2) panel of rows with s1 the row stride, e.g. (N, D) in C order
 *   or channels-last images); len > 1 the along-runs family ((N, C, H, W)
 *   images: runs are planes; (N, D) in Fortran order: runs are columns).
 *   Statistics have n2 values.
 * - layer norm (ln_*): the across-rows panel of an (N, D) array (n1 = N
 *   rows, n2 = D features, len = 1, s2 = 1, s1 the row stride), normalized
 *   along the other axis: statistics per row (n1 values).
 * - group norm (gn_*): n1 samples of n2 channels of len elements, each
 *   sample contiguous (s2 == len, s1 the sample stride); the n2 channels
 *   form q->groups groups of n2/groups adjacent channels.  Statistics per
 *   (sample, group): n1*groups values, sample-major.
 * - RMS norm (rms_*): the layer norm panel; statistics per row.
 * - group norm on channels-last data (gnl_*): n1 samples, each len rows
 *   of n2 adjacent channels (unit channel stride): row r of sample i of
 *   array a starts at a + i*s1 + r*s2 (s2 the row stride); groups as
 *   gn_*'s, of n2/groups adjacent channels.
 * gamma, beta (and dgamma, dbeta) have n2 values in every family.
 * Strides of length-1 axes are never used to address memory.
 *
 * Functions return 0 on success and BNF_ENOMEM when a scratch buffer could
 * not be allocated (the outputs are then undefined).
 */
#ifndef BNFAST_H
#define BNFAST_H

#include <stddef.h>
#include <stdint.h>

#define BNF_OK 0
#define BNF_ENOMEM (-1)

/* One array's strides in the panel, in elements: s1 between runs (rows,
   samples), s2 between channels. */
typedef struct {
    ptrdiff_t s1, s2;
} bnf_strides;

/* The data of a call: the shape, and the strides of each array taking
   part (unused ones are not read). */
typedef struct {
    ptrdiff_t n1, n2, len;
    bnf_strides x;  /* x */
    bnf_strides y;  /* the output: y (forward), dx (backward) */
    bnf_strides dy; /* dy (backward) */
    bnf_strides z;  /* the residual (batch norm, params.residual) */
} bnf_panel;

/* What a call reads besides the data. */
typedef struct {
    double eps;       /* forward: 1/sqrt(var + eps) */
    int relu;         /* batch norm: max(y, 0) after the affine (fused ReLU);
                         the backward masks dy as the forward's output */
    int frozen;       /* batch norm backward: mean and invstd are constants
                         (the running statistics of a 'test' mode forward):
                         dx = gamma * invstd * dy (masked by relu), dgamma
                         and dbeta as usual; count not read */
    ptrdiff_t groups; /* group norm: groups of n2/groups channels */
    double count;     /* bn_backward_apply: values per channel summed (over
                         every panel of a synchronized batch) */
    const double *gamma, *beta;  /* per channel; NULL: gamma = 1, beta = 0 */
    const double *mean, *invstd; /* the forward's statistics */
    const double *var;           /* bn_forward_test: (running) variance */
    const double *sum_dy, *sum_dyxmu; /* bn_backward_apply: the sums of dy
                                         and dy * (x - mean) */
    const void *residual; /* batch norm apply and forwards: z, an array of
                             the data type T with strides p->z, added
                             before the ReLU: y = max(bn(x) + z, 0); NULL:
                             none; equal to the output y (same strides): the
                             in-place add, each z read before its y is
                             written.  bn_residual_gate reads it too. */
} bnf_params;

/* What a call writes besides the data. */
typedef struct {
    double *mean, *invstd;      /* forward-train statistics */
    double *var;                /* bn_forward_train: the biased variance */
    double *m2;                 /* bn_stats: sum of squared deviations */
    double *sum_dy, *sum_dyxmu; /* bn_backward_reduce */
    double *dgamma, *dbeta;     /* backward */
    double *mean_lo; /* bn_stats, when not NULL: each mean's low part,
                        mean + mean_lo to about twice double precision
                        (mean itself is the same either way); for a
                        merge of means that keeps no rounding at their
                        scale (synchronized batch norm) */
} bnf_results;

/* The storage dtypes: the rows of a kernel table (bnf_kernels_for). */
enum { BNF_F32, BNF_F64, BNF_F16, BNF_BF16, BNF_NDTYPES };

/* The entry points take the data as void * (the dtype is the table's
   row): x, dy const; y or dx the output. */
typedef int (*bnf_fwd_fn)(const bnf_panel *, const bnf_params *, const void *x,
                          void *y, bnf_results *);
typedef int (*bnf_stats_fn)(const bnf_panel *, const bnf_params *,
                            const void *x, bnf_results *);
typedef int (*bnf_apply_fn)(const bnf_panel *, const bnf_params *,
                            const void *x, void *y);
typedef int (*bnf_bwd_fn)(const bnf_panel *, const bnf_params *, const void *x,
                          const void *dy, void *dx, bnf_results *);
typedef int (*bnf_reduce_fn)(const bnf_panel *, const bnf_params *,
                             const void *x, const void *dy, bnf_results *);

/* One dtype's entry points. */
typedef struct {
    /* Batch norm, training mode: y = (x - mean) * (gamma * invstd) + beta
       with the batch statistics (then max(y, 0) if relu).  Reads eps,
       relu, gamma, beta; writes mean, invstd = 1/sqrt(var + eps) and the
       biased var. */
    bnf_fwd_fn bn_forward_train;
    /* The two steps of bn_forward_train (synchronized batch norm merges
       the statistics between them): mean and M2 (sum of squared
       deviations) per channel, writing mean, m2 (and mean_lo unless
       NULL); and the normalization with given statistics, reading relu,
       gamma, beta, mean, invstd. */
    bnf_stats_fn bn_stats;
    bnf_apply_fn bn_apply;
    /* Batch norm, inference mode: y = (x - mean) * (gamma / sqrt(var +
       eps)) + beta with given (running) statistics.  Reads eps, relu,
       gamma, beta, mean, var. */
    bnf_apply_fn bn_forward_test;
    /* Batch norm backward, simplified single formula: reads relu, gamma,
       beta, and the forward's mean and invstd; writes dx, dgamma, dbeta.
       In two steps: bn_backward_reduce writes sum_dy and sum_dyxmu (the
       sums of dy and dy * (x - mean) over the panel); bn_backward_apply
       reads them (summed over several panels: synchronized batch norm)
       and count, and writes dx, dgamma, dbeta (which may alias sum_dyxmu,
       sum_dy).  All three read frozen (backward through a 'test' mode
       forward: mean and invstd its running statistics). */
    bnf_bwd_fn bn_backward;
    bnf_reduce_fn bn_backward_reduce;
    bnf_bwd_fn bn_backward_apply;
    /* The fused residual's ReLU gate: g = dy where the forward's
       (x - mean) * (gamma * invstd) + beta + z was > 0, else 0, into the
       output array (strides p->y); reads gamma, beta, mean, invstd,
       residual.  The backward of relu(bn(x) + z) is then the plain
       backward (relu 0) of g, and g is dz.  r not NULL: also writes
       sum_dy and sum_dyxmu, bn_backward_reduce's sums of g (across rows
       in the gate's pass), for bn_backward_apply of g. */
    bnf_bwd_fn bn_residual_gate;
    /* Layer norm: reads eps, gamma, beta; writes the per-row mean and
       invstd.  Backward: reads gamma, mean, invstd; writes dx, dgamma,
       dbeta. */
    bnf_fwd_fn ln_forward;
    bnf_bwd_fn ln_backward;
    /* RMS norm (the layer norm panel): reads eps, gamma; writes the
       per-row mean of squares (as mean) and 1/sqrt(it + eps) (as invstd).
       Backward: reads gamma, invstd; writes dx, dgamma. */
    bnf_fwd_fn rms_forward;
    bnf_bwd_fn rms_backward;
    /* Group norm: reads groups, eps, gamma, beta; writes the per-(sample,
       group) mean and invstd.  Backward: reads groups, gamma, mean,
       invstd; writes dx, dgamma, dbeta. */
    bnf_fwd_fn gn_forward;
    bnf_bwd_fn gn_backward;
    /* Group norm on channels-last data (gnl_*): the same reads and writes
       as gn_*, on the channels-last panel. */
    bnf_fwd_fn gnl_forward;
    bnf_bwd_fn gnl_backward;
} bnf_kernels;

/* The kernels of storage dtype `dtype` (BNF_F32, ...) at the current SIMD
   level; NULL for an unknown dtype.  The pointer stays valid; a later
   bnf_simd_set changes what the next call returns. */
const bnf_kernels *bnf_kernels_for(int dtype);

/* Threads of the OpenMP builds (1 without OpenMP; jobs under
   bnf_get_parallel_min() bytes always run on one thread); threads.c says
   how the count is chosen.  bnf_set_num_threads(n): n threads, clamped to
   [0, BNF_MAX_THREADS]; 0 is OpenMP's count (OMP_NUM_THREADS, threadpoolctl,
   else the cores).  It returns 1 when n > 1 cannot be honoured: in a child
   forked after a parallel region had run, which stays on one thread.
   bnf_get_num_threads(): the count a large job started from this thread
   would use.  bnf_get_thread_state: {n as set, forked and serial, forked
   after a parallel region, the most threads allowed}.  bnf_threads_init()
   registers the at-fork handler (once; call it before the first job). */
#define BNF_MAX_THREADS 1024
int bnf_set_num_threads(int n);
int bnf_get_num_threads(void);
void bnf_get_thread_state(int state[4]);
void bnf_threads_init(void);
/* Jobs over fewer bytes than this run on one thread (default 1 MiB; a
   setting for tests and measurements). */
void bnf_set_parallel_min(ptrdiff_t bytes);
ptrdiff_t bnf_get_parallel_min(void);
int bnf_have_openmp(void);

/* SIMD levels (dispatch.c): every kernel is compiled once per level the
   build offers, and the best one this CPU runs is chosen at load.  All
   levels give bitwise the same results.
   - bnf_simd_name(level): "baseline", "x86-64-v3" (AVX2, FMA, F16C,
     BMI1/2) or "x86-64-v4" (AVX-512 F, BW, CD, DQ, VL); NULL out of range.
   - bnf_simd_built(level): compiled into this build (baseline always).
   - bnf_simd_cpu(level): this CPU and OS run it (cpuid, and the OS saves
     the vector registers: xgetbv).
   - bnf_simd_get(): the level in use; bnf_simd_set(level): use it, 0 on
     success, -1 (nothing changed) when it is not built or not run by
     this CPU.  Not thread-safe against calls running at the time. */
enum { BNF_SIMD_BASELINE, BNF_SIMD_V3, BNF_SIMD_V4, BNF_SIMD_NLEVELS };
const char *bnf_simd_name(int level);
int bnf_simd_built(int level);
int bnf_simd_cpu(int level);
int bnf_simd_get(void);
int bnf_simd_set(int level);

#endif /* BNFAST_H */
