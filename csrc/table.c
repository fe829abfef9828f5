/* This SIMD level's table of entry points (bnf_kernels, bnfast.h), one row
   per dtype in the order of BNF_F32, BNF_F64, BNF_F16, BNF_BF16; compiled
   once per level with the kernel files (internal.h), read by dispatch.c.
   The data pointers are void * in the table: each function is called only
   through its own dtype's row, with arrays of that dtype. */
#include "bnfast.h"
#include "internal.h"

#define BNF_ROW_(SUF)                                                         \
    {.bn_forward_train = (bnf_fwd_fn)bn_forward_train_##SUF,                  \
     .bn_stats = (bnf_stats_fn)bn_stats_##SUF,                                \
     .bn_apply = (bnf_apply_fn)bn_apply_##SUF,                                \
     .bn_forward_test = (bnf_apply_fn)bn_forward_test_##SUF,                  \
     .bn_backward = (bnf_bwd_fn)bn_backward_##SUF,                            \
     .bn_backward_reduce = (bnf_reduce_fn)bn_backward_reduce_##SUF,           \
     .bn_backward_apply = (bnf_bwd_fn)bn_backward_apply_##SUF,                \
     .bn_residual_gate = (bnf_bwd_fn)bn_residual_gate_##SUF,                  \
     .ln_forward = (bnf_fwd_fn)ln_forward_##SUF,                              \
     .ln_backward = (bnf_bwd_fn)ln_backward_##SUF,                            \
     .rms_forward = (bnf_fwd_fn)rms_forward_##SUF,                            \
     .rms_backward = (bnf_bwd_fn)rms_backward_##SUF,                          \
     .gn_forward = (bnf_fwd_fn)gn_forward_##SUF,                              \
     .gn_backward = (bnf_bwd_fn)gn_backward_##SUF,                            \
     .gnl_forward = (bnf_fwd_fn)gnl_forward_##SUF,                            \
     .gnl_backward = (bnf_bwd_fn)gnl_backward_##SUF}
/* (SUF expanded first: f32_<level>) */
#define BNF_ROW(SUF) BNF_ROW_(SUF)

const bnf_kernels BNF_ISA_FN(bnf_table)[BNF_NDTYPES] = {
    BNF_ROW(BNF_ISA_FN(f32)), BNF_ROW(BNF_ISA_FN(f64)),
    BNF_ROW(BNF_ISA_FN(f16)), BNF_ROW(BNF_ISA_FN(bf16))};
