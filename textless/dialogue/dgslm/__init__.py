"""dGSLM: the dual-tower dialogue unit LM (model, fairseq import, targets and training, duration-counter generation)."""

from textless.dialogue.dgslm.model import DGSLM, DGSLMConfig, DGSLMOutput, DialogueVocab, preset_config

__all__ = ["DGSLM", "DGSLMConfig", "DGSLMOutput", "DialogueVocab", "preset_config"]
