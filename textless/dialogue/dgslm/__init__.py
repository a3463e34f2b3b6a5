"""dGSLM: the dual-tower dialogue unit LM (model, fairseq import, targets and training, duration-counter generation)."""

from textless.dialogue.dgslm.generate import DialogueSamplingConfig, generate_dialogue
from textless.dialogue.dgslm.loader import load_dialogue_lm
from textless.dialogue.dgslm.model import DGSLM, DGSLMConfig, DGSLMOutput, DialogueVocab, preset_config

__all__ = ["DGSLM", "DGSLMConfig", "DGSLMOutput", "DialogueSamplingConfig", "DialogueVocab", "generate_dialogue",
           "load_dialogue_lm", "preset_config"]
