"""Evaluation: lm-evaluation-harness tasks on our own model (`LitGPTLM`) and perplexity on text files.

    litgpt evaluate CHECKPOINT_DIR --tasks hellaswag,arc_easy --batch_size 8
    litgpt evaluate CHECKPOINT_DIR --tasks perplexity --data_dir texts/

`litgpt.eval.lm_eval_model` imports lm-eval; import it only when you need the harness.
"""

from litgpt.eval.perplexity import PerplexityResult, ScoreRow, perplexity, rolling_windows, score_rows

__all__ = ["PerplexityResult", "ScoreRow", "perplexity", "rolling_windows", "score_rows"]
