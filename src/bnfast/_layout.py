"""Views of arrays as the kernels' "panels".

A panel is a 3-D view (n1, n2, len) of an array for per-channel work: n2
channels (the array's ``axis``) of n1 runs of len elements, with unit stride
along the runs (see csrc/bnfast.h).  The other axes of the array are split
by stride into those outside the channel (merged into n1) and those inside
it (merged into the contiguous runs).  That covers, without copying:

* (N, D) in C order, channels-last images, broadcast or reversed rows:
  len == 1, channels adjacent (the across-rows kernels);
* (N, C, H, W) images in C order, (N, D) in Fortran order, Fortran-order
  images: runs of len > 1 (the along-runs kernels).

Anything else (e.g. strided runs ``x[..., ::2]``) needs a copy first;
:func:`panel_or_copy` makes it.
"""
import math

import numpy as np


def _merged(dims):
    """Size and stride (in bytes) of axes merged into one, outermost first,
    or None when they do not merge.  ``dims``: (stride, size) pairs."""
    size, stride = 1, 0
    for st, n in reversed(dims):
        if size > 1 and st != stride * size:
            return None
        if size == 1:
            stride = st
        size *= n
    return size, stride


def _order(a, axis):
    """(perm, n1): the axes of ``a`` in panel order (length-1 axes, the
    outer axes merged into n1 runs, the channel axis, the inner axes
    merged into the runs) so that ``a.transpose(perm).reshape(n1, C, -1)``
    is a view; None when the layout needs a copy first (also unaligned
    data: the kernels read whole elements)."""
    if not a.flags.aligned:
        return None
    if a.flags.c_contiguous:  # as panel's shortcut: one run per channel
        return tuple(range(a.ndim)), (1 if a.shape[axis] == 1 else
                                      math.prod(a.shape[:axis]))
    item = a.itemsize
    cs = a.strides[axis]
    if any(st % item for st in a.strides):
        return None
    others = sorted(((abs(a.strides[k]), k) for k in range(a.ndim)
                     if k != axis and a.shape[k] > 1), reverse=True)
    if a.shape[axis] > 1:  # stride 0 (broadcast) is never part of a run
        outer = [k for st, k in others if st > abs(cs) or st == 0]
        inner = [k for st, k in others if 0 < st <= abs(cs)]
    else:  # a single channel: everything that merges into runs is inner
        outer, inner = [], [k for _, k in others]
    m_out = _merged([(a.strides[k], a.shape[k]) for k in outer])
    m_in = _merged([(a.strides[k], a.shape[k]) for k in inner])
    if m_out is None or m_in is None:
        return None
    if inner and m_in[1] != item:       # runs must be contiguous
        if a.shape[axis] == 1 and not outer:
            outer, inner = inner, []      # one channel of strided rows
        else:
            return None
    if not inner and a.shape[axis] > 1 and cs != item:
        return None                     # rows need adjacent channels
    ones = [k for k in range(a.ndim) if k != axis and a.shape[k] == 1]
    return (tuple(ones + outer + [axis] + inner),
            math.prod(a.shape[k] for k in outer))


def panel(a, axis):
    """The panel view of ``a`` with channels along ``axis``, or None when
    the layout needs a copy first."""
    if a.flags.c_contiguous and a.flags.aligned:  # without _order's work
        c = a.shape[axis]
        if c == 1:  # one channel: one contiguous run (the lanes kernels)
            return a.reshape(1, 1, -1)
        if axis == a.ndim - 1:
            return a.reshape(-1, c, 1)
        return a.reshape(math.prod(a.shape[:axis]), c, -1)
    order = _order(a, axis)
    if order is None:
        return None
    perm, n1 = order
    return a.transpose(perm).reshape(n1, a.shape[axis], -1)


def panel_or_copy(a, axis):
    """(array, panel): ``a`` itself when it has a panel view, else a
    C-contiguous copy of it."""
    p = panel(a, axis)
    if p is None:
        a = _aligned_copy(a)
        p = panel(a, axis)
    return a, p


def _aligned_copy(a):
    """A C-contiguous, aligned copy (np.ascontiguousarray would return a
    contiguous but unaligned array as it is)."""
    return np.array(a, order="C")


def like(a, axis):
    """A new array of ``a``'s shape and dtype and its panel, which has the
    shape of ``a``'s panel and the same element order: the panel is
    allocated C-contiguous and the array is a view of it (so it is laid
    out in ``a``'s axis order: C order for C order, Fortran for Fortran).
    ``a`` must have a panel view."""
    if a.flags.c_contiguous:
        out = np.empty(a.shape, a.dtype)
        return out, panel(out, axis)
    perm, n1 = _order(a, axis)
    p = np.empty((n1, a.shape[axis], a.size // (n1 * a.shape[axis])),
                 a.dtype)
    inverse = np.argsort(perm)
    out = p.reshape([a.shape[k] for k in perm]).transpose(inverse)
    return out, p


def view(a, shape):
    """``a.reshape(shape)`` when that is a view of ``a``, else None."""
    v = a.reshape(shape)
    return v if v.size == 0 or np.may_share_memory(v, a) else None


def panel_as(out, a, axis):
    """The panel of ``out`` (an array of ``a``'s shape) in the element
    order of ``a``'s panel, for the kernels to write, or None when out's
    layout does not give one fit for the kernels."""
    if a.flags.c_contiguous and out.flags.c_contiguous and out.flags.aligned:
        return panel(out, axis)
    if not out.flags.aligned or any(st % out.itemsize for st in out.strides):
        return None
    perm, n1 = _order(a, axis)
    p = view(out.transpose(perm), (n1, a.shape[axis], -1))
    if p is None:
        return None
    # the kernels' contiguity: unit-stride runs, or for runs of one
    # element adjacent channels (anything else runs element by element,
    # several times slower than computing into a new array and copying)
    k = 2 if p.shape[2] > 1 else 1
    if p.shape[k] > 1 and p.strides[k] != p.itemsize:
        return None
    return p


def as_unit_rows(a):
    """``a`` (2-D) when its columns are unit-stride (any row stride), the
    layout the layer norm kernels take, else None."""
    item = a.itemsize
    if (a.flags.aligned and (a.shape[1] == 1 or a.strides[1] == item)
            and (a.shape[0] == 1 or a.strides[0] % item == 0)):
        return a
    return None


def unit_rows(a):
    """``a`` (2-D) with unit-stride columns: itself or a C-contiguous copy."""
    r = as_unit_rows(a)
    return _aligned_copy(a) if r is None else r


def as_samples(a):
    """``a`` (N, C, HW) when its samples are C-contiguous (any sample
    stride), the layout the group norm kernels take, else None."""
    n, c, hw = a.shape
    item = a.itemsize
    if (a.flags.aligned and (hw == 1 or a.strides[2] == item)
            and (c == 1 or a.strides[1] == hw * item)
            and (n == 1 or a.strides[0] % item == 0)):
        return a
    return None


def samples(a):
    """``a`` (N, C, HW) with C-contiguous samples: itself or a C-contiguous
    copy."""
    r = as_samples(a)
    return _aligned_copy(a) if r is None else r
