"""Generation: the engine (`litgpt.generate.base`) and the `litgpt generate` verb (`litgpt.generate.cli`)."""
