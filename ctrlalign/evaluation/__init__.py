"""Evaluation harness that reproduces the MEET paper's tables (seed 002, section 4.3).

Modules, lightest first, so importing one never drags in torch unless it needs it:

- ``verdicts``: win / tie / lose, the paper's two-order rule and win-rate summaries.
- ``llm_judge``: the paper's GPT-4 prompts sent to any OpenAI-compatible endpoint.
- ``rm_judge``: a sequence-classification reward model as judge (DeBERTa in the paper).
- ``rouge``: ROUGE-1/2/L against reference summaries (TL;DR).
- ``report``: win-rate tables (Markdown, CSV) and delta plots (Figure 3 style).

Built on them, the commands (``commands``): ``eval_data`` (which prompts, as judges read
them), ``judges`` (``rm:``/``llm:`` specs, cached), ``generations`` (cached answers per run
and temperature), ``report_writer`` (the report folder), ``runner`` (``ctrlalign
evaluate``) and ``experiment`` (``ctrlalign experiment``: train what is missing, then
evaluate).
"""
