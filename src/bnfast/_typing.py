"""Type aliases of bnfast's annotations (typing only: nothing here is
needed at run time, and the modules import it under TYPE_CHECKING).

FloatArray is what the functions return: an ndarray of float16,
bfloat16, float32 or float64 (bfloat16, ``ml_dtypes.bfloat16``, is not a
subclass of ``numpy.floating``: its arrays are typed as floating ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol, Union

import numpy as np
import numpy.typing as npt

__all__ = [
    "FloatArray",
    "ArrayLike",
    "Param",
    "Grad",
    "ParamDict",
    "ShapeLike",
    "Activation",
    "DTypeLike",
    "Comm",
]

#: An ndarray of float16, bfloat16, float32 or float64.
FloatArray = npt.NDArray[np.floating[Any]]
#: What the functions convert to an array (x, dout, gamma, beta, ...).
ArrayLike = npt.ArrayLike
#: gamma or beta: an array-like of floats (or ints, converted), or None
#: (affine-free).
Param = Optional[npt.ArrayLike]
#: dgamma or dbeta: None for a parameter that was None in the forward.
Grad = Optional[FloatArray]
#: bn_param, ln_param, rms_param, gn_param: a dict (batch norm's receives
#: the running statistics).
ParamDict = dict[str, Any]
#: normalized_shape: an int or a sequence of ints.
ShapeLike = Union[int, Sequence[int]]
#: The fused activation: None or 'relu' (other strings: ValueError).
Activation = Optional[str]
#: A layer's parameter dtype.
DTypeLike = npt.DTypeLike


class Comm(Protocol):
    """bnfast.distributed's ``comm``: mpi4py's buffer collectives (an
    ``mpi4py.MPI.Comm`` is one; Allreduce sums)."""

    def Get_size(self) -> int: ...
    def Allgather(self, sendbuf: Any, recvbuf: Any, /) -> Any: ...
    def Allreduce(self, sendbuf: Any, recvbuf: Any, /) -> Any: ...
