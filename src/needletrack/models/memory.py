"""STCN's memory read: L2 (negative squared Euclidean) affinity, softmax over memory, readout.

affinity(i, j) = (2·kM_iᵀ kQ_j − ‖kM_i‖²) / √C, softmax over memory positions i, readout = V · A.
The dropped −‖kQ_j‖² term is constant over i, so this equals softmax_i(−‖kM_i − kQ_j‖² / √C).
Top-k (inference): keep the k largest affinities per query position, softmax over those, zero the rest.
All shapes static and all ops ONNX-friendly (MatMul, TopK, ScatterElements, Softmax).
"""
from __future__ import annotations

import math

import torch


def l2_affinity(mem_key: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """mem_key B×C×N, query_key B×C×M -> B×N×M logits (before the softmax over N)."""
    return _logits_qm(mem_key, query_key).transpose(1, 2)


def _logits_qm(mem_key: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """Query-major logits B×M×N: softmax and top-k then run over the last axis (fast in onnxruntime)."""
    c = mem_key.shape[1]
    ab = torch.bmm(query_key.transpose(1, 2), mem_key)  # B×M×N
    a_sq = mem_key.pow(2).sum(1).unsqueeze(1)  # B×1×N
    return (2 * ab - a_sq) / math.sqrt(c)


def softmax_affinity(logits: torch.Tensor, valid: torch.Tensor | None = None,
                     top_k: int | None = None, dim: int = 1) -> torch.Tensor:
    """Softmax over memory positions (``dim``; 1 for B×N×M logits, -1 for B×M×N) with an optional
    ``valid`` mask (B×N bool) and top-k (the k largest per query kept, the rest set to 0)."""
    if valid is not None:
        neg = torch.finfo(logits.dtype).min
        vm = valid.unsqueeze(2) if dim == 1 else valid.unsqueeze(1)
        logits = logits.masked_fill(~vm, neg)
    n = logits.shape[dim]
    if top_k is not None and int(top_k) < n:
        vals, idx = torch.topk(logits, int(top_k), dim=dim)
        w = torch.softmax(vals, dim=dim)  # masked entries (finfo.min) get weight 0 unless all are masked
        return torch.zeros_like(logits).scatter(dim, idx, w)
    return torch.softmax(logits, dim=dim)


def read_memory(mem_key: torch.Tensor, mem_val: torch.Tensor, query_key: torch.Tensor,
                valid: torch.Tensor | None = None, top_k: int | None = None) -> torch.Tensor:
    """Memory readout.

    mem_key B×Ck×N, mem_val B×Cv×N (N = T·h·w), query_key B×Ck×h×w, valid B×N bool (optional)
    -> B×Cv×h×w.
    """
    b, ck, h, w = query_key.shape
    q = query_key.flatten(2)
    aff = softmax_affinity(_logits_qm(mem_key, q), valid, top_k, dim=-1)  # B×M×N
    out = torch.bmm(mem_val, aff.transpose(1, 2))  # B×Cv×M
    return out.view(b, mem_val.shape[1], h, w)
