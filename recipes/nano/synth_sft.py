"""Mine zhcoder-nano's SFT data from the corpus. A documented top-level function becomes three rows:
- a chat pair: a request (its docstring's first paragraph plus its signature, in Chinese when the docstring is
  Chinese) and an answer (the function in a ```python block);
- two prompt-completion rows, plain code as in HumanEval: signature + docstring -> the body, and signature alone
  -> docstring + body. Without them a small model carries the chat answers' Markdown fences into plain completion
  (the CPU ablation: most of its HumanEval completions ended in a fence after SFT).

    python recipes/nano/synth_sft.py WORK/src --out WORK/sft_mined.jsonl [--removed WORK/pretrain/removed.jsonl]

Files the data build removed (duplicates, contamination, filters) are skipped when --removed is given, and every
row is checked against the evaluation sets' 13-word n-grams (zhcoder.data.decontaminate) before it is kept.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import textwrap
from pathlib import Path

CJK = re.compile(r"[\u4e00-\u9fff]")


def rows_of(path: Path, text: str):
    """The rows of one source file (see the module doc); all rows of a function share its `group`, so that
    `zhcoder data sft` puts them in the same split."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        source = ast.get_source_segment(text, node)
        if not doc or not source or not 3 <= source.count("\n") <= 40:
            continue
        summary = doc.strip().split("\n\n")[0].strip()
        if len(summary) < 15:
            continue
        arguments = ast.unparse(node.args)
        chinese = bool(CJK.search(summary))
        request = (f"{summary}\n\n请用 Python 实现这个函数：`def {node.name}({arguments})`。" if chinese else
                   f"{summary}\n\nImplement this in Python: `def {node.name}({arguments})`.")
        lang, where = "zh" if chinese else "en", f"{path}:{node.lineno}"
        yield {"messages": [{"role": "user", "content": request},
                            {"role": "assistant", "content": f"```python\n{textwrap.dedent(source)}\n```"}],
               "lang": lang, "id": where, "group": where}
        lines = re.split(r"(?<=\n)", source)                # not splitlines: ast counts only \n as a line end
        signature, docstring = node.body[0].lineno - node.lineno, node.body[0].end_lineno - node.lineno + 1
        if signature < 1 or len(node.body) < 2:             # a one-line def, or nothing after the docstring
            continue
        for cut, kind in ((docstring, "body"), (signature, "docstring+body")):
            yield {"prompt": "".join(lines[:cut]), "completion": "".join(lines[cut:]).rstrip("\n") + "\n",
                   "lang": lang, "id": f"{where}:{kind}", "group": where}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--removed", type=Path)
    args = parser.parse_args()
    from zhcoder.data.decontaminate import Decontaminator

    removed = set()
    if args.removed and args.removed.exists():
        removed = {json.loads(line)["id"] for line in args.removed.read_text(encoding="utf-8").splitlines()}
    deco = Decontaminator.from_tasks()
    kept, contaminated = {"pairs": 0, "completions": 0}, 0
    with open(args.out, "w", encoding="utf-8") as out:
        for path in sorted(args.src.rglob("*.py")):
            relative = path.relative_to(args.src).as_posix()
            if relative in removed or path.stat().st_size > 200_000:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for row in rows_of(path.relative_to(args.src), text):
                text_of_row = row["prompt"] + row["completion"] if "prompt" in row else "".join(
                    message["content"] for message in row["messages"])
                if deco.match(text_of_row):
                    contaminated += 1
                    continue
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                kept["completions" if "prompt" in row else "pairs"] += 1
    print(json.dumps({**kept, "dropped_contaminated": contaminated, "out": str(args.out)}))


if __name__ == "__main__":
    main()
