"""GPU checks of the training path (run on a CUDA machine; falls back to CPU to test the script itself).

    python benchmarks/gpu_check.py [--tokenizer DIR] [--json out.json]

1. Packed documents with the code-aware bias: logits through FlexAttention (compiled on GPU) and through the SDPA
   boolean mask against each document run alone, fp32 and bf16 (max |difference|).
2. Gradients of the code-aware bias and of q_proj through FlexAttention (the bias as value weights) vs the SDPA
   path.
3. A short bf16 pre-training run of the real Trainer on synthetic shards, and the same run stopped after step 8
   and resumed from its step-6 checkpoint: whether the per-step losses equal the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from zhcoder.config import ModelConfig
from zhcoder.model import QwenForCausalLM, document_block_mask, document_causal_mask, init_weights

SEGMENTS = [(0, 100), (100, 130), (130, 400), (400, 512)]


def tiny_model(device, vocab=512) -> QwenForCausalLM:
    config = ModelConfig(model_type="qwen3", vocab_size=vocab, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                         code_aware_attention=True)
    model = QwenForCausalLM(config)
    init_weights(model, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.model.code_token_class.copy_(torch.randint(0, 5, (vocab,), generator=generator, dtype=torch.uint8))
        for layer in model.model.layers:
            layer.self_attn.code_bias.copy_(torch.randn(layer.self_attn.code_bias.shape, generator=generator))
    return model.to(device)


def attention_checks(device) -> dict:
    model = tiny_model(device)
    ids = torch.randint(0, 512, (2, 512), generator=torch.Generator().manual_seed(2)).to(device)
    position_ids = torch.cat([torch.arange(e - s) for s, e in SEGMENTS]).expand(2, -1).to(device)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            flex = model(ids, position_ids=position_ids, attention_mask=document_block_mask(position_ids)).float()
            sdpa = model(ids, position_ids=position_ids, attention_mask=document_causal_mask(position_ids)).float()
            alone = torch.cat([model(ids[:, s:e]) for s, e in SEGMENTS], 1).float()
        name = str(dtype).removeprefix("torch.")
        out[f"{name}_flex_vs_alone"] = float((flex - alone).abs().max())
        out[f"{name}_sdpa_vs_alone"] = float((sdpa - alone).abs().max())
    if device.type == "cpu":                                # FlexAttention has no CPU backward
        return out
    grads = []
    for mask in (document_block_mask(position_ids), document_causal_mask(position_ids)):
        model.zero_grad()
        model(ids, position_ids=position_ids, attention_mask=mask, labels=ids).backward()
        layer = model.model.layers[0].self_attn
        grads.append((layer.code_bias.grad.clone(), layer.q_proj.weight.grad.clone()))
    out["code_bias_grad_rel_diff"] = float((grads[0][0] - grads[1][0]).norm() / grads[1][0].norm())
    out["q_proj_grad_rel_diff"] = float((grads[0][1] - grads[1][1]).norm() / grads[1][1].norm())
    return out


def resume_check(tokenizer: str, work: Path, seq_len: int) -> dict:
    from zhcoder.data.shards import ShardWriter
    from zhcoder.tokenizer import Tokenizer
    from zhcoder.train.loop import TrainConfig, Trainer

    vocab = (Tokenizer.qwen() if tokenizer == "qwen" else Tokenizer.from_dir(tokenizer)).vocab_size
    rng = np.random.default_rng(0)
    with ShardWriter(work / "data", "train", vocab_size=vocab) as writer:
        for _ in range(400):
            writer.add(rng.integers(0, 2000, int(rng.integers(20, 700))))   # a small alphabet: learnable
    shape = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64)
    class Crashing(Trainer):
        def train_step(self):
            if self.step == 8:                               # dies after step 8; the last checkpoint is step 6
                raise KeyboardInterrupt
            return super().train_step()

    for name in ("whole", "crashed"):
        config = TrainConfig(data=str(work / "data"), out=str(work / name), preset="qwen3-0.6b", tokenizer=tokenizer,
                             model_overrides=shape, seq_len=seq_len, batch_size=4, steps=12, lr=1e-3, warmup_steps=2,
                             save_every=6, eval_every=100, log_every=100, code_aware_attention=True)
        try:
            (Crashing if name == "crashed" else Trainer)(config, console=lambda *a, **k: None).run()
        except KeyboardInterrupt:
            Trainer(config, resume=True, console=lambda *a, **k: None).run()
    losses = {name: [json.loads(line)["loss"] for line in (work / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("whole", "crashed")}
    return {"losses_whole": losses["whole"], "losses_resumed": losses["crashed"],
            "resume_max_abs_diff": max(abs(a - b) for a, b in zip(losses["whole"], losses["crashed"])),
            "resume_exact": losses["whole"] == losses["crashed"], "loss_fell": losses["whole"][-1] < losses["whole"][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", default="qwen")
    parser.add_argument("--seq-len", type=int, default=1024, help="of the resume check's run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__}
    report["attention"] = attention_checks(device)
    print(json.dumps(report["attention"], indent=1))
    with tempfile.TemporaryDirectory() as tmp:
        report["resume"] = resume_check(args.tokenizer, Path(tmp), args.seq_len)
    print(json.dumps(report["resume"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
