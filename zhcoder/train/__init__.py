"""Training: one loop for continued pre-training and SFT, full or LoRA, one process or FSDP2 under torchrun.

Modules:
    loop.py    TrainConfig (TOML and flags), the Trainer (data, model, optimizer, schedule, metrics, resume)
    state.py   atomic, verified checkpoints (HF model or PEFT adapter + optimizer + RNG + data position)
    lora.py    PEFT LoRA on zhcoder's model: apply, load (adapters from transformers + peft too), merge

    zhcoder train pretrain --help
    pytest -q tests/test_train.py tests/test_lora.py
"""
