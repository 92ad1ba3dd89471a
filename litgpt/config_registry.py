"""The registry of named configs: published hyperparameters, as data. `litgpt.config` builds `name_to_config`."""

configs: list[dict] = [
    dict(name="pythia-14m", hf_config=dict(org="EleutherAI", name="pythia-14m"), block_size=512, n_layer=6,
         n_embd=128, n_head=4, padding_multiple=128),
    dict(name="Llama-3.2-1B", hf_config=dict(org="meta-llama", name="Llama-3.2-1B"), block_size=131072,
         vocab_size=128000, padded_vocab_size=128256, n_layer=16, n_embd=2048, n_head=32, n_query_groups=8,
         rotary_percentage=1.0, parallel_residual=False, bias=False, norm_class_name="RMSNorm",
         mlp_class_name="LLaMAMLP", intermediate_size=8192, rope_base=500000,
         rope_adjustments=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=8192)),
]
