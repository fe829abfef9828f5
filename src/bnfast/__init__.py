"""bnfast: fast batch normalization for NumPy on the CPU.

The public functions have the signatures and results of their twins in
``bnfast.reference`` (plain NumPy), computed by C kernels.
"""

from bnfast._config import (
    _init_simd,
    _init_threads,
    get_num_threads,
    set_num_threads,
    show_config,
)
from bnfast._version import __version__ as __version__
from bnfast.functional import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    rmsnorm_backward,
    rmsnorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)
from bnfast.layers import (
    BatchNorm,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    RMSNorm,
    fold_batchnorm_linear,
    fold_conv_batchnorm,
    fold_linear_batchnorm,
    from_torch,
)

_init_threads()
_init_simd()

__all__ = [
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "rmsnorm_forward",
    "rmsnorm_backward",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
    "BatchNorm",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm",
    "from_torch",
    "fold_linear_batchnorm",
    "fold_batchnorm_linear",
    "fold_conv_batchnorm",
    "set_num_threads",
    "get_num_threads",
    "show_config",
]
