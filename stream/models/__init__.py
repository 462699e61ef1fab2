"""Models in the pipeline: the contract a model declares (contract.py), how a name on the command
line becomes a model (registry.py), and the built-in models (nsfw.py, transnet.py).

Nothing here imports torch or onnxruntime at module level: the base install runs without the
``[models]`` extra, and asking for a model without it fails in one line that names the extra.
"""
