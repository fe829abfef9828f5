/* Instantiates a kernel template once per dtype.  A .c file defines
   BNF_TEMPLATE as the template's file name and includes this; the template
   writes T for the storage type, C for the compute type and NAME(f) for
   the name f_f32 / f_f64 / f_f16 / f_bf16 (then _<level>: internal.h).

   Each instantiation is one block below: a new storage type is one more.
   - T: the storage type of the data (x, y, dy, dx).
   - C: the compute type of the element-wise arithmetic and of the short
     sums (float32 data is computed in float32: twice the SIMD width of
     double and no conversions).  Per-channel statistics, coefficients and
     every long sum are double whatever C is: the short sums are flushed
     into double (BNF_FLUSH below), so a sum's error grows with the flush
     length, not with the batch.
   - LOAD(v), STORE(v): a stored value to C and back (plain casts for
     float32 and float64; float16 and bfloat16 convert, half.h).
   - HILO, XMU(v, mh, ml): HILO is 1 when C is narrower than double, so
     that a per-channel mean is carried as a pair (mh, ml) with mean =
     mh + ml to double precision and x - mean is formed as XMU: (x - mh)
     - ml, exact to the rounding of the result even when the mean is 1e4
     times the spread (0 for double: XMU is x - mh, ml is never read).
   - RELU_MIN: the largest C value that rounds to 0 in T, so that the
     ReLU's mask on the stored output, (T)v > 0, reads v > RELU_MIN in C
     (0 while C is T).
   - BNF_FLUSH: elements a C accumulator sums before it is added to a
     double one (per lane along runs, per column across rows).  float32:
     16, so each short sum's relative error is at most ~16 ulps of its
     terms (typically ~4); double: also 16 (pairs of elements along
     runs), the flushes then added to compensated totals (lanes_tmpl.h,
     rows_bwd_reduce, group norm's dgamma and dbeta), so that a float64
     sum's error does not grow with its length (issue 12); across rows,
     the statistics and layer norm's dgamma and dbeta keep their groups
     of BNF_SUM_ROWS rows (NumPy's axis-0 sums, the reference, are
     recursive). */
#ifndef BNF_TEMPLATE
#error "define BNF_TEMPLATE before including instantiate.h"
#endif

#include "half.h"

/* f_<dtype>_<level>: the names carry the SIMD level too (internal.h) */
#define NAME(f) BNF_CAT(BNF_CAT(f, SUF), BNF_ISA)

#define T float
#define C float
#define SUF f32
#define LOAD(v) ((C)(v))
#define STORE(v) ((T)(v))
#define HILO 1
#define XMU(v, mh, ml) (((v) - (mh)) - (ml))
#define RELU_MIN 0.0f
#define BNF_FLUSH 16
#include BNF_TEMPLATE
#undef T
#undef C
#undef SUF
#undef LOAD
#undef STORE
#undef HILO
#undef XMU
#undef RELU_MIN
#undef BNF_FLUSH

#define T double
#define C double
#define SUF f64
#define LOAD(v) ((C)(v))
#define STORE(v) ((T)(v))
#define HILO 0
#define XMU(v, mh, ml) ((void)(ml), (v) - (mh))
#define RELU_MIN 0.0
#define BNF_FLUSH 16
#include BNF_TEMPLATE
#undef T
#undef C
#undef SUF
#undef LOAD
#undef STORE
#undef HILO
#undef XMU
#undef RELU_MIN
#undef BNF_FLUSH

/* float16 and bfloat16 storage (half.h: uint16_t bits, exact loads,
   stores to nearest even), computed as float32 is.  RELU_MIN: the largest
   float rounding to +0 in storage, 2**-25 (half of float16's smallest
   subnormal, a tie to the even 0) and 2**-134 for bfloat16. */
#define T uint16_t
#define C float
#define SUF f16
#define LOAD(v) bnf_f16_load(v)
#define STORE(v) bnf_f16_store((C)(v))
#define HILO 1
#define XMU(v, mh, ml) (((v) - (mh)) - (ml))
#define RELU_MIN 0x1p-25f
#define BNF_FLUSH 16
#include BNF_TEMPLATE
#undef T
#undef C
#undef SUF
#undef LOAD
#undef STORE
#undef HILO
#undef XMU
#undef RELU_MIN
#undef BNF_FLUSH

#define T uint16_t
#define C float
#define SUF bf16
#define LOAD(v) bnf_bf16_load(v)
#define STORE(v) bnf_bf16_store((C)(v))
#define HILO 1
#define XMU(v, mh, ml) (((v) - (mh)) - (ml))
#define RELU_MIN 0x1p-134f
#define BNF_FLUSH 16
#include BNF_TEMPLATE
#undef T
#undef C
#undef SUF
#undef LOAD
#undef STORE
#undef HILO
#undef XMU
#undef RELU_MIN
#undef BNF_FLUSH

#undef NAME
