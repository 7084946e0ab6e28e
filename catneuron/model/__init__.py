"""The model: locally connected layers, L2 pooling, LCN, stages, the network and its configuration."""

from catneuron.model.config import Config, ModelConfig, StageConfig, TrainConfig
from catneuron.model.lcn import LocalContrastNorm
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.network import Network, NeuronId, standardize
from catneuron.model.pooling import L2Pool2d
from catneuron.model.stage import Stage, StageOutput

__all__ = ["Config", "ModelConfig", "StageConfig", "TrainConfig", "LocalContrastNorm", "LocalDecoder",
           "LocallyConnected2d", "Network", "NeuronId", "standardize", "L2Pool2d", "Stage", "StageOutput"]
