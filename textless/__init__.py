"""textless: pure textless spoken language modeling (GSLM / TWIST / Align-SLM lineage).

Data flows one way: audio -> units -> unit LM -> units -> audio. Each stage writes a typed, versioned artifact
that the next stage reads.
"""

__version__ = "0.1.0"
