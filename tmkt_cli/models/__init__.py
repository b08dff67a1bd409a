"""Spiking networks (snn), their LIF neuron (neurons) and the ANN teachers (ann)."""

from tmkt_cli.models.ann import LoadReport, build_ann, load_init_weights
from tmkt_cli.models.neurons import FusedLIFNode
from tmkt_cli.models.snn import (
    BACKBONES,
    SNNOutput,
    TwoStreamSNN,
    build_snn,
    build_trunk,
    register_backbone,
)

__all__ = ["BACKBONES", "FusedLIFNode", "LoadReport", "SNNOutput", "TwoStreamSNN", "build_ann",
           "build_snn", "build_trunk", "load_init_weights", "register_backbone"]
