"""Evaluation harness that reproduces the MEET paper's tables (seed 002, section 4.3).

- ``verdicts``: win / tie / lose, the paper's two-order rule and win-rate summaries.
- ``judges``: the ``Judge`` interface and its registry: ``rm:`` reward models, ``llm:``
  OpenAI-compatible endpoints with the paper's GPT-4 prompts; both cache their decisions.
- ``rouge``: ROUGE-1/2/L against reference summaries (TL;DR).
- ``report`` and ``report_writer``: win-rate tables (Markdown, CSV) and delta plots.
- ``eval_data`` (which prompts, as judges read them), ``generations`` (cached answers per
  run and temperature) and ``runner`` (``ctrlalign evaluate``).
- ``sweep``: ``alpha-sweep``, reward, length and distinctness against alpha.

Above it, ``ctrlalign.experiment`` trains what is missing and then evaluates.
"""
