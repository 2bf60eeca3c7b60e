"""The `zhcoder` command line: `app.py` holds the app, its error handling and the options several stages share;
one module per stage holds that stage's verbs, each a thin call into the package below it. Importing zhcoder.cli
registers every verb; `zhcoder.cli:main` is the console script's entry point.

    zhcoder --help                      # the verbs
    python -m zhcoder.cli train pretrain --help          # as torchrun runs it: torchrun ... -m zhcoder.cli ...

    app.py        the app, main(), shared options
    generate.py   info, init, complete, fim, chat          data.py    tokenizer train, data build, data sft,
    eval.py       eval, report                                        tokens compare
    train.py      train pretrain|sft, lora merge           serve.py   serve, demo
    export.py     export gguf                              settings.py  options generated from settings dataclasses

User errors (a missing folder, a bad flag, a prompt over the context) print one line on stderr and exit 2;
ZHCODER_DEBUG=1 shows the traceback instead.
"""

from zhcoder.cli import data, eval, export, generate, serve, train  # noqa: F401  (each adds its verbs)
from zhcoder.cli.app import USER_ERRORS, UsageError, app, main  # noqa: F401  (the entry point)
