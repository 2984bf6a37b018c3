"""The torch models (ResUNet segmenter, classifier gate), their cost and their checkpoints.

Training and export only: the runtime (edgeseg.edge) never imports this package.
"""
from edgeseg.models.checkpoint import CHECKPOINT_SCHEMA, CheckpointMeta, check_state_dict, load_checkpoint, save_checkpoint
from edgeseg.models.classifier import Classifier
from edgeseg.models.encoder import ResEncoder
from edgeseg.models.flops import count_flops, count_macs, count_params, model_costs, model_summary
from edgeseg.models.registry import DEFAULT_INPUT, MODEL_FOR_TASK, MODELS, create_model, model_options, task_of
from edgeseg.models.resunet import ResUNet

__all__ = [
    "CHECKPOINT_SCHEMA", "CheckpointMeta", "Classifier", "DEFAULT_INPUT", "MODELS", "MODEL_FOR_TASK", "ResEncoder",
    "ResUNet", "check_state_dict", "count_flops", "count_macs", "count_params", "create_model", "load_checkpoint",
    "model_costs", "model_options", "model_summary", "save_checkpoint", "task_of",
]
