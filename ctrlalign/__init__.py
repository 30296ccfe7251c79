"""ctrlalign: controllable alignment of language models."""
