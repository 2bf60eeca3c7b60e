"""Evaluation: run generated code in a sandbox and score it on HumanEval, MBPP(+), Chinese suites and LeetCode.

Modules, lower to higher (a module imports only those above it):
  sandbox.py   execute untrusted programs (its helper process: sandbox_helper.py): namespaces, rlimits, verdicts
  problems.py  Problem / Task; tasks.py: the loaders of every benchmark; evalplus.py (+ evalplus_checker.py): MBPP+
  subjects.py  where completions come from: a samples file, a local model (engine), an OpenAI-compatible endpoint
  scoring.py   pass@k, results.jsonl / summary.json, resuming
  report.py    Markdown table and PNG chart over several result folders
  run.py       `zhcoder eval TASK ...` end to end

    zhcoder eval humaneval --samples samples.jsonl --out runs/eval-1 --json
"""
