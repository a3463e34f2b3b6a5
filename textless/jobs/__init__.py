"""Jobs: what a command does across the stages (tokenize, kmeans, generate, resynthesize, evaluate, demo).

The stages (`textless.tokenizers`, `textless.lm`, `textless.vocoders`) never import each other; a job composes them
(and `textless.pipeline`) for one command. Each module holds its dataclass config and its entry function, which the
CLI (`textless.cli`) calls.
"""
