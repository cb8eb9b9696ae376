"""Grow a trained TagNet to wider stages without changing what it computes (Net2WiderNet,
Chen, Goodfellow & Shlens 2016).

Training a wider network from scratch costs every step the small one already took; growing
the small one keeps what it learned and adds room. Each new channel copies an existing one
(its conv filters, its BatchNorm parameters and statistics); the layers that read a copied
channel split that channel's weights between the copies. The split shares are random and sum
to one per weight, so the grown network's outputs equal the original's, while the copies get
different gradients and can drift apart (an even split would keep them identical forever).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tagger.model import TagNet, _SeparableBlock


def _mapping(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """New channel -> the old channel it copies: the old ones first, then random repeats."""
    if new < old:
        raise ValueError(f"cannot narrow a stage ({old} -> {new} channels)")
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def _shares(mapping: torch.Tensor, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Per new input channel (dim 1 of ``shape``), a random share of its old channel's weight;
    the copies of one old channel sum to exactly one, weight by weight."""
    raw = torch.rand(*shape, generator=generator) + 0.5  # 0.5-1.5: no copy starts near zero
    totals = torch.zeros(shape[0], int(mapping.max()) + 1, *shape[2:])
    totals.index_add_(1, mapping, raw)
    return raw / totals[:, mapping]


def _copy_bn(bn: nn.BatchNorm2d, out_map: torch.Tensor, new_bn: nn.BatchNorm2d) -> None:
    """New channel j normalised as old channel out_map[j] (parameters and statistics)."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new_bn, name).copy_(getattr(bn, name)[out_map])
    new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)


def _split_in(weight: torch.Tensor, in_map: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``weight`` [out, in, ...] read from widened inputs: columns copied, then shared out."""
    widened = weight[:, in_map]
    return widened * _shares(in_map, widened.shape, generator)


@torch.no_grad()
def widen_tagnet(net: TagNet, n_mels: int, n_labels: int, widths: Sequence[int], *, seed: int = 0) -> TagNet:
    """A TagNet with ``widths`` whose outputs (eval mode) equal ``net``'s."""
    generator = torch.Generator().manual_seed(seed)
    old_blocks = [m for m in net.features if isinstance(m, _SeparableBlock)]
    grown = TagNet(n_mels, n_labels, tuple(widths))
    new_blocks = [m for m in grown.features if isinstance(m, _SeparableBlock)]
    if len(new_blocks) != len(old_blocks):
        raise ValueError(f"cannot change the number of stages ({len(old_blocks) // 2} -> {len(widths)})")
    if [b.residual for b in new_blocks] != [b.residual for b in old_blocks]:
        raise ValueError("stages that differ in width must still differ (and equal ones stay equal)")
    grown.features[0].load_state_dict(net.features[0].state_dict())  # the per-mel input norm
    stem, new_stem = net.features[1], grown.features[1]
    space = _mapping(stem.out_channels, new_stem.out_channels, generator)  # the stem's channels
    new_stem.weight.copy_(stem.weight[space])
    _copy_bn(net.features[2], space, grown.features[2])
    for old, new in zip(old_blocks, new_blocks):
        depth_conv, depth_bn, _, point_conv, point_bn, _ = old.body
        new_depth_conv, new_depth_bn, _, new_point_conv, new_point_bn, _ = new.body
        new_depth_conv.weight.copy_(depth_conv.weight[space])  # one filter per channel
        _copy_bn(depth_bn, space, new_depth_bn)
        # a residual block adds its input to its output: both stay in the same channel space
        out_space = space if old.residual else _mapping(point_conv.out_channels, new_point_conv.out_channels, generator)
        new_point_conv.weight.copy_(_split_in(point_conv.weight, space, generator)[out_space])
        _copy_bn(point_bn, out_space, new_point_bn)
        space = out_space
    old_linear, new_linear = net.head[1], grown.head[1]
    half = old_linear.in_features // 2  # the head reads [mean over time, max over time]
    both = torch.cat([space, space + half])
    new_linear.weight.copy_(_split_in(old_linear.weight, both, generator))
    new_linear.bias.copy_(old_linear.bias)
    return grown
