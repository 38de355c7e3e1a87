"""The models r1ci runs with: the tiny test Llama, SmolLM2 conversion, and path resolution."""

import hashlib
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1ci.models import make_tiny_model, resolve_model


def test_tiny_model_loads_in_transformers_with_chatml_tokenizer(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 < n_params < 1_000_000
    assert model.config.hidden_size // model.config.num_attention_heads == 64  # a head size vLLM's CPU attention accepts
    assert model.dtype == torch.float32
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=False)
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    code = "```python\nprint(347 * 29)\n```\n"
    assert tok.decode(tok.encode(code, add_special_tokens=False)) == code
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok)) and torch.isfinite(logits).all()


def test_tiny_model_is_reproducible(tmp_path, tiny_model_dir):
    again = make_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json"):
        digests = {hashlib.sha256((Path(d) / name).read_bytes()).hexdigest() for d in (tiny_model_dir, again)}
        assert len(digests) == 1, name


def test_resolve_model_builds_tiny_once_and_passes_folders_and_hub_ids(tmp_path):
    first = resolve_model("tiny", str(tmp_path))
    stamp = (Path(first) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny", str(tmp_path)) == first
    assert (Path(first) / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no half-built leftovers
    assert resolve_model(first, str(tmp_path)) == first
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct", str(tmp_path)) == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize("path", ["/no/such/model", "./missing-model", "missing-model"])
def test_resolve_model_names_a_missing_path_and_the_fix(tmp_path, path):
    with pytest.raises(FileNotFoundError, match=f"'{path}' does not exist.*model.path"):
        resolve_model(path, str(tmp_path))


def test_interrupted_conversion_is_not_reused(tmp_path, monkeypatch):
    import r1ci.models as models

    def broken(directory):
        (Path(directory) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "make_tiny_model", broken)
    with pytest.raises(KeyboardInterrupt):
        resolve_model("tiny", str(tmp_path))
    assert not (tmp_path / "models" / models.TINY_CACHE_NAME).exists()
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_smollm2_gguf_converts_to_a_loadable_hf_folder(tmp_path):
    folder = resolve_model("smollm2", str(tmp_path))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert tok.eos_token == "<|im_end|>"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 347*29?"}], add_generation_prompt=True, return_dict=False)
    with torch.no_grad():
        next_id = model(torch.tensor([ids])).logits[0, -1].argmax().item()
    assert tok.decode([next_id]).strip()  # a real token, not padding
