"""Input validation shared by the public entry points.

Every check runs before anything is written, so a failing call leaves its
inputs and bn_param untouched.  Messages name the argument and what was
expected.
"""
import math
import numbers

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F64 = np.dtype(np.float64)
MODES = ("train", "test")


def float_array(a, name):
    """``a`` as a float32 or float64 ndarray in native byte order.

    Array-likes (lists) are converted; byte-swapped float arrays are copied
    to native order; any other dtype raises TypeError.
    """
    a = np.asarray(a)
    dt = a.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {dt}")
    if not dt.isnative:
        a = a.astype(dt.newbyteorder("="))
    return a


def batch(x, name="x", allow_empty=False):
    """Validate a batch x of shape (N, ...) and view it as (N, D)."""
    x = float_array(x, name)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (N, D), got shape "
            f"{x.shape}")
    n = x.shape[0]
    if n == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (N = 0), shape {x.shape}")
    if 0 in x.shape[1:]:
        raise ValueError(f"{name} has zero features, shape {x.shape}")
    return x, x.reshape(n, math.prod(x.shape[1:]))


def channel_axis(x, axis, allow_empty=False):
    """Validate x (at least 2-D, a non-empty batch, channels and elements
    per channel) and its channel axis; return the axis as a non-negative
    int."""
    if x.ndim < 2:
        raise ValueError(
            f"x must have at least 2 dimensions (N, C, ...), got shape "
            f"{x.shape}")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"axis {axis} is out of bounds for x of {x.ndim} dimensions")
    axis = int(axis) % x.ndim
    if axis == 0:
        raise ValueError("axis must not be 0, the batch axis")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"x is an empty batch (N = 0), shape {x.shape}")
    if 0 in x.shape[1:]:
        raise ValueError(f"x has no elements per channel, shape {x.shape}")
    return axis


def per_feature(a, name, feature_shape):
    """Validate a per-feature array (gamma, beta, running stats).

    Accepts shape (D,) or ``feature_shape`` (D = its size) and
    float32/float64; returns the array as given (validated) and a
    C-contiguous (D,) view or copy of it in its own dtype, which the
    kernels take (bnfast._kernels converts float32 to float64 in C).
    """
    d = math.prod(feature_shape)
    if (type(a) is np.ndarray and a.dtype in _FLOAT_DTYPES
            and a.dtype.isnative and a.shape == (d,)
            and a.flags.c_contiguous and a.flags.aligned):
        return a, a  # already what the kernels take
    arr = float_array(a, name)
    if arr.shape != (d,) and arr.shape != tuple(feature_shape):
        expected = f"({d},)"
        if len(feature_shape) > 1:
            expected += f" or {tuple(feature_shape)}"
        raise ValueError(
            f"{name} must have shape {expected} to match x, got {arr.shape}")
    flat = arr.reshape(d)
    if not (flat.flags.c_contiguous and flat.flags.aligned):
        flat = np.array(flat, order="C")  # aligned too
    return arr, flat


ACTIVATIONS = (None, "relu")


def activation(value):
    """True for the fused ReLU, False for none; anything else raises."""
    if value is not None and (not isinstance(value, str)
                              or value not in ACTIVATIONS):
        raise ValueError(
            f"activation must be one of {ACTIVATIONS}, got {value!r}")
    return value == "relu"


def mode(param, name="bn_param"):
    if not isinstance(param, dict):
        raise TypeError(f"{name} must be a dict, got {type(param).__name__}")
    if "mode" not in param:
        raise KeyError(f"{name}['mode'] is required: one of {MODES}")
    m = param["mode"]
    if not isinstance(m, str) or m not in MODES:
        raise ValueError(
            f"{name}['mode'] must be one of {MODES}, got {m!r}")
    return m


def real_in(value, name, low, high=None):
    """A Python float from a real scalar, checked low <= value (<= high)."""
    if type(value) is float and value >= low and (high is None
                                                  or value <= high):
        return value  # the common case, without the checks below
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not (v >= low and (high is None or v <= high)):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {rng}, got {value!r}")
    return v


def out_array(out, shape, dtype, inputs, name="out"):
    """Validate a caller's output array: an ndarray of exactly ``shape``
    and ``dtype``, writeable, sharing no memory with any of ``inputs``
    ((name, array) pairs: a partial overlap would read values already
    overwritten, and the cache keeps x for the backward)."""
    if type(out) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray, got "
                        f"{type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (x's), got "
                        f"{out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got "
                         f"{out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if any(st == 0 and n > 1 for st, n in zip(out.strides, out.shape)):
        raise ValueError(f"{name} has elements sharing memory (a stride of "
                         f"0): each result needs its own")
    for what, a in inputs:
        if _overlap(out, a):
            raise ValueError(f"{name} must not share memory with {what}")
    return out


def _overlap(a, b):
    if not (isinstance(b, np.ndarray) and np.may_share_memory(a, b)):
        return False
    try:
        return np.shares_memory(a, b, max_work=100_000)
    except np.exceptions.TooHardError:  # numpy >= 1.25
        return True
