"""The model layer: loading, controls, the sequence layouts, log-prob gathering,
``ControlledLM`` (no loss: objectives live in ``training``), the CLM identity layer, reward
models and run directories. It imports only ``ctrlalign.data``."""
