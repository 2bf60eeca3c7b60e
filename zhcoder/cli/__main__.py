"""`python -m zhcoder.cli ...`: the `zhcoder` command, as torchrun runs it (`torchrun ... -m zhcoder.cli train ...`)."""

from zhcoder.cli import main

main()
