"""One resumable training engine; each trainer is an `Objective` plugged into it (see `engine` and `objective`)."""

from textless.training.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state
from textless.training.config import TrainingConfig
from textless.training.engine import TrainHooks, TrainResult, end_process_group, train_objective
from textless.training.objective import Context, Objective, OptimizerSpec, StepLoss

__all__ = ["Context", "Objective", "OptimizerSpec", "StepLoss", "TrainHooks", "TrainResult", "TrainingConfig",
           "end_process_group", "latest_checkpoint", "list_checkpoints", "load_trainer_state", "train_objective"]
