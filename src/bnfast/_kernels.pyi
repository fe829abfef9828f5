# Type stub of the Cython extension module bnfast._kernels (_kernels.pyx):
# the call path of the fast functions.  Keep it in step with the .pyx:
# every ``def`` at module level, the caches and their readonly attributes,
# and the two call objects (BnForward, BnBackward) that
# bnfast.distributed uses.  Positional parameters as the .pyx defines them
# (its ``def``s take them by keyword too).
from __future__ import annotations

from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

from bnfast._typing import (
    ArrayLike,
    FloatArray,
    Grad,
    Param,
    ParamDict,
    ShapeLike,
)

_C = TypeVar("_C", bound=BatchNormCache)

MODES: tuple[str, str]
ACTIVATIONS: tuple[None, str]
MAX_THREADS: int

def simd_level() -> str: ...
def simd_levels() -> dict[str, tuple[bool, bool]]: ...
def set_simd_level(name: str) -> str: ...
def set_num_threads(n: int) -> bool: ...
def get_num_threads() -> int: ...
def _thread_state() -> tuple[int, bool, bool, int]: ...
def _set_parallel_min(nbytes: int) -> None: ...
def _get_parallel_min() -> int: ...
def have_openmp() -> bool: ...
def _overlaps_itself(a: npt.NDArray[Any]) -> bool: ...

class _Cache:
    """Base of the forward passes' caches (read-only)."""

    @property
    def x(self) -> FloatArray: ...
    @property
    def gamma(self) -> FloatArray | None: ...
    @property
    def mean(self) -> npt.NDArray[np.float64]: ...
    @property
    def invstd(self) -> npt.NDArray[np.float64]: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def gamma_shape(self) -> tuple[int, ...] | None: ...
    @property
    def gamma_dtype(self) -> np.dtype[Any] | None: ...
    @property
    def affine(self) -> tuple[bool, bool]: ...
    def __reduce__(self) -> tuple[Any, ...]: ...
    def __setstate__(self, state: Any) -> None: ...

class BatchNormCache(_Cache):
    @property
    def beta(self) -> FloatArray | None: ...
    @property
    def axis(self) -> int: ...
    @property
    def relu(self) -> bool: ...
    @property
    def frozen(self) -> bool: ...
    @property
    def has_residual(self) -> bool: ...
    @property
    def residual(self) -> FloatArray | None: ...
    @property
    def panel(self) -> FloatArray | None: ...

class _ResidualBatchNormCache(BatchNormCache):
    # Typing only (no such class at run time): the static type of the
    # BatchNormCache a forward with ``residual=`` returns, whose backward
    # returns a fourth gradient, dresidual.  A cache whose static type is
    # plain BatchNormCache is typed as one without a residual.
    ...

class LayerNormCache(_Cache): ...
class RMSNormCache(_Cache): ...

class GroupNormCache(_Cache):
    @property
    def groups(self) -> int: ...
    @property
    def axis(self) -> int: ...

class BnForward:
    """A validated batch norm forward call (bnfast.distributed)."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def x(self) -> FloatArray: ...
    @property
    def axis(self) -> int: ...
    @property
    def train(self) -> bool: ...
    @property
    def relu(self) -> bool: ...
    @property
    def eps(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def count(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def has_residual(self) -> bool: ...
    @property
    def mode(self) -> str: ...
    def unbiased_factor(self, count: int) -> float: ...
    def update_running(
        self, mean: ArrayLike, var: ArrayLike, factor: float
    ) -> None: ...
    def cache(
        self, mean: ArrayLike, invstd: ArrayLike, cls: type[_C]
    ) -> _C: ...
    def stats(
        self,
    ) -> tuple[
        npt.NDArray[np.float64],
        npt.NDArray[np.float64] | None,
        npt.NDArray[np.float64],
    ]: ...
    def apply(self, mean: ArrayLike, invstd: ArrayLike) -> FloatArray: ...
    @overload
    def run(
        self, cls: None = None
    ) -> tuple[FloatArray, BatchNormCache | None]: ...
    @overload
    def run(self, cls: type[_C]) -> tuple[FloatArray, _C]: ...

class BnBackward:
    """A validated batch norm backward call (bnfast.distributed)."""

    @property
    def channels(self) -> int: ...
    @property
    def dresidual(self) -> FloatArray | None: ...
    def reduce(self) -> npt.NDArray[np.float64]: ...
    def apply(self, count: float, sums: ArrayLike) -> FloatArray: ...
    def param_grads(
        self, dgamma: ArrayLike, dbeta: ArrayLike
    ) -> tuple[Grad, Grad]: ...

def bn_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    axis: int | None,
    activation: str | None,
    out: FloatArray | None,
    allow_empty: bool,
    residual: ArrayLike | None = None,
) -> BnForward: ...
@overload
def batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    activation: str | None = None,
    out: FloatArray | None = None,
    residual: None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
@overload
def batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    activation: str | None,
    out: FloatArray | None,
    residual: ArrayLike,
) -> tuple[FloatArray, _ResidualBatchNormCache]: ...
@overload
def batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    activation: str | None = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
@overload
def spatial_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    axis: int = 1,
    activation: str | None = None,
    out: FloatArray | None = None,
    residual: None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
@overload
def spatial_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    axis: int,
    activation: str | None,
    out: FloatArray | None,
    residual: ArrayLike,
) -> tuple[FloatArray, _ResidualBatchNormCache]: ...
@overload
def spatial_batchnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    bn_param: ParamDict,
    axis: int = 1,
    activation: str | None = None,
    out: FloatArray | None = None,
    residual: ArrayLike | None = None,
) -> tuple[FloatArray, BatchNormCache]: ...
def bn_backward(
    dout: ArrayLike,
    cache: BatchNormCache,
    out: FloatArray | None,
    forward_name: str,
) -> BnBackward: ...

# (a cache typed as the residual one gets four gradients; mypy calls the
# narrower first overload with another return type an unsafe overlap: it
# is the typing-only subclass above, meant so)
@overload
def batchnorm_backward(  # type: ignore[overload-overlap]
    dout: ArrayLike,
    cache: _ResidualBatchNormCache,
    out: FloatArray | None = None,
) -> tuple[FloatArray, Grad, Grad, FloatArray]: ...
@overload
def batchnorm_backward(
    dout: ArrayLike, cache: BatchNormCache, out: FloatArray | None = None
) -> tuple[FloatArray, Grad, Grad]: ...
def layernorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    ln_param: ParamDict,
    out: FloatArray | None = None,
    normalized_shape: ShapeLike | None = None,
) -> tuple[FloatArray, LayerNormCache]: ...
def layernorm_backward(
    dout: ArrayLike, cache: LayerNormCache, out: FloatArray | None = None
) -> tuple[FloatArray, Grad, Grad]: ...
def rmsnorm_forward(
    x: ArrayLike,
    gamma: Param,
    rms_param: ParamDict,
    out: FloatArray | None = None,
    normalized_shape: ShapeLike | None = None,
) -> tuple[FloatArray, RMSNormCache]: ...
def rmsnorm_backward(
    dout: ArrayLike, cache: RMSNormCache, out: FloatArray | None = None
) -> tuple[FloatArray, Grad]: ...
def spatial_groupnorm_forward(
    x: ArrayLike,
    gamma: Param,
    beta: Param,
    G: int,
    gn_param: ParamDict,
    out: FloatArray | None = None,
    axis: int = 1,
) -> tuple[FloatArray, GroupNormCache]: ...
def spatial_groupnorm_backward(
    dout: ArrayLike, cache: GroupNormCache, out: FloatArray | None = None
) -> tuple[FloatArray, Grad, Grad]: ...
def stream_copy(src: npt.NDArray[Any], dst: npt.NDArray[Any]) -> None: ...
def stream_copy_streams() -> bool: ...
