"""Finetuning verbs: thin layers over `litgpt.train.fit` that differ only in how the model is prepared."""
