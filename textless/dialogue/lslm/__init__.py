"""Listen while speaking: `ListenSpeakLM` (a speaking unit LM fused with a continuous listening channel early /
middle / late, as LSLM, or summed per frame, as the duplex S2S model) and its interruption token."""

from textless.dialogue.lslm.model import FUSIONS, IRQ, FusionConfig, ListenSpeakLM, listen_positions, with_irq

__all__ = ["FUSIONS", "IRQ", "FusionConfig", "ListenSpeakLM", "listen_positions", "with_irq"]
