"""Generation: the engine (`litgpt.generate.engine`) and the `litgpt generate` verb (`litgpt.generate.cli`)."""
