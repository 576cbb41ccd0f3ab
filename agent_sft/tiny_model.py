"""A tiny random chat model built offline, for tests and dry runs of the whole pipeline.

It has a real byte-level BPE tokenizer (Qwen2's pre-tokenizer and normalizer), a ChatML chat template
and a random `Qwen2ForCausalLM` that vLLM, transformers and TRL all load. Its output is gibberish;
what matters is that every code path that touches a model runs for real, in about a second:

    agent-sft tiny-model /tmp/tiny
    python -c "from agent_sft.tiny_model import build_tiny_chat_model; build_tiny_chat_model('/tmp/tiny')"
"""

from __future__ import annotations

import os

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen2's split pattern. Without it (or with `AutoTokenizer` guessing from a qwen2 config) the saved
# tokenizer would be rebuilt differently on load and token counts would not match across backends.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML, and with `tools` Qwen2.5's way of offering them (Hermes style): the schemas in the system turn, an
# assistant's calls as `<tool_call>` blocks (its `reasoning_content` in `<think>` before its text), `tool` messages
# as `<tool_response>` blocks of a user turn. A call's arguments are written with `tojson`, as Qwen2.5 writes them
# (an object renders as JSON; JSON text renders as a string). Without tools and calls it renders exactly plain ChatML.
_TOOLS_HEADER = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided "
    "with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
)
_TOOL_TURN = (
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
)
_CALLS = (
    "{%- if message.reasoning_content %}{{- '<think>' + message.reasoning_content + '</think>\\n' }}{%- endif %}"
    "{{- message['content'] or '' }}"
    "{%- for tc in message.tool_calls or [] %}"
    "{%- set f = tc.function if tc.function is defined else tc %}"
    "{%- if loop.first and not message['content'] %}{{- '<tool_call>\\n' }}{%- else %}{{- '\\n<tool_call>\\n' }}"
    "{%- endif %}"
    "{{- '{\"name\": \"' + f.name + '\", \"arguments\": ' }}"
    "{{- f.arguments | tojson }}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}"
)
_CALL_TEST = "message['role'] == 'assistant' and (message.tool_calls or message.reasoning_content)"

CHATML_TEMPLATE = (
    _TOOLS_HEADER
    + "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'tool' %}" + _TOOL_TURN
    + "{%- elif " + _CALL_TEST + " %}{{- '<|im_start|>assistant\\n' }}" + _CALLS + "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# The same rendering, with assistant turns wrapped in `{% generation %}` so that TRL's
# `assistant_only_loss=True` can mask everything else.
CHATML_GENERATION_TEMPLATE = (
    _TOOLS_HEADER
    + "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'tool' %}" + _TOOL_TURN
    + "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{%- if message.tool_calls or message.reasoning_content %}" + _CALLS
    + "{%- else %}{{- message['content'] + '<|im_end|>' }}{%- endif %}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_OBJECTS = (
    "apple", "bowl", "mug", "knife", "plate", "pan", "lettuce", "tomato", "egg", "potato", "bread",
    "cup", "spatula", "fork", "spoon", "kettle", "book", "pen", "pencil", "cellphone", "keychain",
    "creditcard", "watch", "vase", "candle", "towel", "soapbar", "cloth", "pillow", "laptop",
)
_RECEPTACLES = (
    "countertop", "cabinet", "drawer", "fridge", "microwave", "sinkbasin", "stoveburner", "shelf",
    "diningtable", "coffeetable", "sidetable", "desk", "dresser", "bed", "sofa", "garbagecan",
    "toilet", "bathtubbasin", "safe", "armchair",
)


def _corpus() -> list[str]:
    """A fixed, ALFWorld-flavoured training text (the tokenizer only needs plausible merges)."""
    lines = [
        "You are in the middle of a room. Looking quickly around you, you see a countertop 1, a cabinet 2.",
        "Your task is to: put a clean apple in fridge.",
        "Nothing happens. You arrive at the drawer. The drawer 1 is closed. You open the drawer 1.",
        "<think>I need to find the object first, then take it to the receptacle.</think>",
        "<action>look</action> <action>inventory</action> <action>examine countertop 1</action>",
        "Admissible actions: go to, take, put, open, close, clean, heat, cool, use, examine, look.",
        "The quick brown fox jumps over the lazy dog 0123456789 !?.,;:'\"()[]{}<>/\\|@#$%^&*-+=_~`",
    ]
    for i, obj in enumerate(_OBJECTS):
        for j, rec in enumerate(_RECEPTACLES):
            n = (i + j) % 4 + 1
            lines.append(
                f"<think>The {obj} may be in the {rec} {n}.</think><action>go to {rec} {n}</action> "
                f"You arrive at {rec} {n}. On the {rec} {n}, you see a {obj} {n}. "
                f"<action>take {obj} {n} from {rec} {n}</action> You pick up the {obj} {n} from the {rec} {n}. "
                f"<action>put {obj} {n} in/on {rec} {n}</action> You put the {obj} {n} in/on the {rec} {n}."
            )
    return lines


def build_tokenizer(vocab_size: int = 1024, *, generation_markers: bool = False):
    """Train the byte-level BPE tokenizer and wrap it as a `PreTrainedTokenizerFast` with ChatML."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML_GENERATION_TEMPLATE if generation_markers else CHATML_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_chat_model(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 4096,
    generation_markers: bool = False,
) -> str:
    """Build and save a tiny random Qwen2 chat model and its tokenizer to `out_dir`.

    Args:
        out_dir: Folder to write (created; existing files are overwritten).
        seed: Seeds the random weights; the same arguments give byte-identical files.
        vocab_size: Target BPE vocabulary size (the fixed corpus may yield slightly fewer tokens).
        hidden_size: Model width; a multiple of 64 (attention heads are 64 wide, as vLLM's CPU
            attention expects).
        num_layers: Decoder layers.
        max_position_embeddings: Longest context the model accepts.
        generation_markers: Wrap assistant turns of the chat template in `{% generation %}` markers
            (needed by TRL's `assistant_only_loss=True`).

    Returns:
        The folder path, as a string.

    Raises:
        ValueError: `hidden_size` is not a positive multiple of 64.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    head_dim = 64
    if hidden_size < head_dim or hidden_size % head_dim:
        raise ValueError(f"hidden_size must be a positive multiple of {head_dim}, got {hidden_size}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)

    tokenizer = build_tokenizer(vocab_size, generation_markers=generation_markers)
    tokenizer.save_pretrained(out_dir)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    heads = hidden_size // head_dim
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out_dir)
    return out_dir
