"""Shared neural-network blocks (radial bases, envelopes, grids, tensor products, norms).

The main public blocks are re-exported here; each lives in a module named for what it does.
"""

from mlip.nn.cp_tensor_product import CGTensorProduct, CPTensorProduct, DenseCGTensorProduct
from mlip.nn.cutoff import cosine_envelope, polynomial_envelope
from mlip.nn.graph_attention import EquivariantGraphAttention, smooth_softmax
from mlip.nn.layer_norm import EquivariantMergeLayerNorm
from mlip.nn.radial import BesselBasis, CubicBSplineBasis, GaussianBasis, SplineRadial
from mlip.nn.s2_grid import S2Grid, exact_product_resolution
from mlip.nn.s2_mixing import S2MixingLayer
from mlip.nn.s2_swiglu import SwiGLUS2
from mlip.nn.so2 import SO2Linear
from mlip.nn.wigner import WignerD, edge_rotation

__all__ = [
    "BesselBasis", "CGTensorProduct", "CPTensorProduct", "CubicBSplineBasis",
    "DenseCGTensorProduct", "EquivariantGraphAttention", "EquivariantMergeLayerNorm",
    "GaussianBasis", "S2Grid", "S2MixingLayer", "SO2Linear", "SplineRadial", "SwiGLUS2",
    "WignerD", "cosine_envelope", "edge_rotation", "exact_product_resolution",
    "polynomial_envelope", "smooth_softmax",
]
