"""Layout algebra for the NHWC lowering: every ONNX tensor lives in TFLite permuted.

The lowering keeps, for each ONNX value, a permutation ``perm`` such that the TFLite
tensor is ``np.transpose(onnx_value, perm)``. Convolutions want NHWC
(``perm = (0, 2, 3, 1)``); element-wise ops take whatever layout their input has;
an ONNX ``Transpose`` costs nothing (it only changes the bookkeeping); a ``Reshape``
that merges or splits dims which stay contiguous in the current layout is done in
that layout. A TRANSPOSE op is emitted only where an op truly needs another layout,
which is how a conv net ends up with none inside. This does in one walk what pushing
Transpose pairs through the ONNX graph and cancelling them would do, without an NHWC
convolution op that ONNX does not have.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["NCHW_TO_NHWC", "change", "compose", "identity", "invert", "is_identity", "reshape_layout", "transpose_layout"]

Perm = tuple[int, ...]

NCHW_TO_NHWC: Perm = (0, 2, 3, 1)


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def is_identity(perm: Sequence[int]) -> bool:
    return all(i == p for i, p in enumerate(perm))


def invert(perm: Sequence[int]) -> Perm:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def compose(first: Sequence[int], then: Sequence[int]) -> Perm:
    """The single perm equal to ``transpose(transpose(x, first), then)``."""
    return tuple(first[t] for t in then)


def change(current: Sequence[int], wanted: Sequence[int]) -> Perm:
    """The TRANSPOSE perm taking a tensor stored in layout ``current`` to layout ``wanted``."""
    inverse = invert(current)
    return tuple(inverse[w] for w in wanted)


def transpose_layout(current: Sequence[int], onnx_perm: Sequence[int]) -> Perm:
    """Layout of ``Transpose(x, onnx_perm)`` that reuses x's TFLite tensor unchanged.

    The stored tensor is ``x.transpose(current)``; the output is ``y = x.transpose(q)``.
    Choosing ``r`` with ``q[r[i]] = current[i]`` makes ``y.transpose(r)`` that same tensor.
    """
    inv_q = invert(onnx_perm)
    return tuple(inv_q[c] for c in current)


def _groups(src: Sequence[int], dst: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of non-1 source dims with runs of non-1 destination dims of equal product."""
    s = [i for i, d in enumerate(src) if d != 1]
    t = [i for i, d in enumerate(dst) if d != 1]
    groups, i, j = [], 0, 0
    while i < len(s) and j < len(t):
        gs, gt = [s[i]], [t[j]]
        ps, pt = src[s[i]], dst[t[j]]
        i, j = i + 1, j + 1
        while ps != pt:
            if ps < pt:
                if i >= len(s):
                    return None
                ps *= src[s[i]]
                gs.append(s[i])
                i += 1
            else:
                if j >= len(t):
                    return None
                pt *= dst[t[j]]
                gt.append(t[j])
                j += 1
        groups.append((gs, gt))
    if i != len(s) or j != len(t):
        return None
    return groups


def reshape_layout(current: Sequence[int], src: Sequence[int], dst: Sequence[int]) -> Perm | None:
    """Layout in which ``Reshape(src -> dst)`` is a plain RESHAPE of the stored tensor, or None.

    Works when every group of source dims that merges into (or splits from) a group of
    destination dims is stored contiguously and in order; e.g. NHWC ``(1,H,W,C)`` from
    ``(1,C,H,W) -> (1,C,H*W)`` is ``(1,H*W,C)``, layout ``(0,2,1)``. Size-1 dims go first.
    """
    if is_identity(current):
        return identity(len(dst))
    groups = _groups(src, dst)
    if groups is None:
        return None
    group_of = {axis: g for g, (gs, _) in enumerate(groups) for axis in gs}
    order: list[int] = []
    position = 0
    stored = [a for a in current if src[a] != 1]
    while position < len(stored):
        g = group_of[stored[position]]
        gs = groups[g][0]
        if stored[position:position + len(gs)] != gs:
            return None
        order.append(g)
        position += len(gs)
    ones = [i for i, d in enumerate(dst) if d == 1]
    return tuple(ones + [axis for g in order for axis in groups[g][1]])
