"""Full-duplex unit LMs: `DuplexLM` (native multi-stream fusion or time multiplexing on one HF backbone), the
streaming generators on top of it (`DuplexGenerator` frame by frame, `TDMGenerator` chunk by chunk) and the audio
loop around them (`DuplexSession`: streaming tokenizer -> generator -> streaming vocoder)."""

from textless.dialogue.duplex.generate import DuplexGenerator, DuplexSampling, TDMGenerator
from textless.dialogue.duplex.model import DuplexConfig, DuplexLM, backbone_config
from textless.dialogue.duplex.session import DuplexSession, SessionLatency

__all__ = ["DuplexConfig", "DuplexGenerator", "DuplexLM", "DuplexSampling", "DuplexSession", "SessionLatency",
           "TDMGenerator", "backbone_config"]
