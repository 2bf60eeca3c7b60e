"""Mine instruction -> code pairs for zhcoder-nano's SFT from the corpus: a documented top-level function becomes
a request (its docstring's first paragraph plus its signature, in Chinese when the docstring is Chinese) and an
answer (the function in a ```python block).

    python recipes/nano/synth_sft.py WORK/src --out WORK/sft_mined.jsonl [--removed WORK/pretrain/removed.jsonl]

Files the data build removed (duplicates, contamination, filters) are skipped when --removed is given, and every
pair is checked against the evaluation sets' 13-word n-grams (zhcoder.data.decontaminate) before it is kept.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import textwrap
from pathlib import Path

CJK = re.compile(r"[\u4e00-\u9fff]")


def pairs_of(path: Path, text: str):
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
        yield {"messages": [{"role": "user", "content": request},
                            {"role": "assistant", "content": f"```python\n{textwrap.dedent(source)}\n```"}],
               "lang": "zh" if chinese else "en", "id": f"{path}:{node.lineno}"}


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
    kept = contaminated = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for path in sorted(args.src.rglob("*.py")):
            relative = path.relative_to(args.src).as_posix()
            if relative in removed or path.stat().st_size > 200_000:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for pair in pairs_of(path.relative_to(args.src), text):
                if deco.match(pair["messages"][0]["content"] + pair["messages"][1]["content"]):
                    contaminated += 1
                    continue
                out.write(json.dumps(pair, ensure_ascii=False) + "\n")
                kept += 1
    print(json.dumps({"pairs": kept, "dropped_contaminated": contaminated, "out": str(args.out)}))


if __name__ == "__main__":
    main()
