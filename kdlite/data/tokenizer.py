"""Tokenizers: the embedded one (built locally, cached) and `load_tokenizer(name_or_path)` for the rest.

The embedded tokenizer is a byte-level BPE trained on the synthetic corpus (kdlite/data/synthetic.py)
with the Qwen3 special tokens and chat layout (docs/design.md §3), so the tiny pair runs the exact code path
of the real one. Trade-off: 746 ids instead of Qwen3's 151,669 keep the tiny models' embedding and
LM head at 0.5% of a Qwen3-vocabulary one (746 x H vs 151,669 x H) and the full logits cheap on CPU,
at the price of longer sequences on text unlike the corpus (byte fallback: any text round-trips;
unseen words cost up to one token per byte). On the corpus it is nearly as compact as Qwen3's
(median 413 vs 406 tokens per rendered example; it was trained on the corpus before its
self-checks, when every corpus word was one token and BPE stopped at 741 learned ids). Digits are always one token each and never merged with a leading space (as in
Qwen3), so the arithmetic is learnable.

Special tokens mirror Qwen3 (kdlite/chat.py): `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>`
(eos) are special; `<think>`/`</think>` are single added tokens that, as in Qwen3 (special=False
there), survive `decode(skip_special_tokens=True)` so graders can find the answer after `</think>`.

The tokenizer ships as an asset (`kdlite/assets/tokenizer`, 52 KB, with its fingerprint), like the
tiny models whose embeddings are tied to its ids. It was trained once, by `build_embedded_tokenizer()`,
on the corpus of its time (version 1: the traces before issue 13's self-checks); later corpus
wording is tokenised with it, unseen words in several pieces, as a real model's fixed tokenizer
reads new data. So a corpus change costs the reasoning teacher's post-training, not the bases.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from kdlite.chat import END_THINK, ENDOFTEXT, IM_END, IM_START, THINK
from kdlite.data import synthetic

TOKENIZER_VERSION = "1"
ASSET = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"
VOCAB_SIZE = 1024  # BPE cap incl. the 256 byte symbols (reached: 741); specials appended after
CORPUS_EXAMPLES, CORPUS_SEED = 1000, 0
_MARKER = "kdlite_tokenizer.json"

# Pieces before byte-level BPE: one digit; an optional space + letters; an optional space +
# punctuation; newlines (with any whitespace before them); other whitespace. A space before a
# digit stays its own piece so " 7" and "7" share the digit token.
_PIECES = r"\p{N}| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s*\n+|\s+"

# The Qwen3 chat layout (docs/design.md §3), written for kdlite. Assistant reasoning comes from
# `reasoning_content` or from `<think>...</think>` in the content; only assistant turns after the
# last user turn keep it, and the final one always gets a think block (empty without reasoning).
CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set body = m.content if m.content is string else '' -%}"
    "{%- set thought = '' -%}"
    "{%- if m.reasoning_content is string -%}{%- set thought = m.reasoning_content -%}"
    "{%- elif '</think>' in body -%}"
    "{%- set thought = body.split('</think>')[0].split('<think>')[-1] -%}"
    "{%- set body = body.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if loop.index0 > ns.last_user and (loop.last or thought.strip('\\n')) -%}"
    "{{- '<think>\\n' + thought.strip('\\n') + '\\n</think>\\n\\n' + body.lstrip('\\n') -}}"
    "{%- else -%}{{- body -}}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and not enable_thinking -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}{%- endif -%}"
)


class TokenizerNotFoundError(ValueError):
    """A tokenizer name or path that could not be resolved (offline Hub, missing folder, ...)."""


def corpus_text() -> list[str]:
    """The texts a new embedded tokenizer is trained on (the corpus plus the chat layout's words)."""
    texts = ["system\n"]
    for ex in synthetic.generate_examples(CORPUS_EXAMPLES, CORPUS_SEED):
        texts += ["user\n", ex.prompt, "assistant\n", f"\n{ex.cot}\n", f"\n\n{ex.answer}", "\n"]
    return texts


def build_embedded_tokenizer(texts: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a new embedded tokenizer (deterministic; ~1 s) on `texts` (default `corpus_text()`).

    Not what `embedded_tokenizer()` returns: that one is the shipped asset, trained once by this
    function on the corpus of its time. Shipping it means the corpus's wording can change without
    invalidating every shipped tiny model (their embeddings are tied to its ids), as a real
    model's tokenizer stays fixed while its training data changes. A new tokenizer version means
    `save_embedded_tokenizer()` into the asset and `make tiny-models`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_text() if texts is None else texts, trainer=trainer)
    # Appended after the BPE ids, as in Qwen3; normalized=False so they match the raw text.
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in (ENDOFTEXT, IM_START, IM_END)]
    )
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in (THINK, END_THINK)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )


def save_embedded_tokenizer(tok: PreTrainedTokenizerFast, folder: Path = ASSET) -> None:
    """Write `tok` as the embedded tokenizer asset, with its fingerprint in the marker file."""
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    marker = {"version": TOKENIZER_VERSION, "fingerprint": tokenizer_fingerprint(tok)}
    (folder / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")


class EmbeddedTokenizerError(RuntimeError):
    """The shipped tokenizer asset is missing, unreadable or not the tokenizer its marker names."""


@functools.lru_cache(maxsize=4)
def _load_asset(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> PreTrainedTokenizerFast:
    """Load and check the asset once per `stamp` (its files' names, sizes and mtimes): the stamp is
    only part of the cache key, so an asset edited on disk is read and checked again."""
    path = Path(folder)
    try:
        marker = json.loads((path / _MARKER).read_text())
        tok = PreTrainedTokenizerFast.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - every failure gets the same actionable message
        raise EmbeddedTokenizerError(
            f"the embedded tokenizer asset {path} could not be read ({type(err).__name__}: "
            f"{err}); restore it from the repository (git checkout -- {path})"
        ) from err
    got = tokenizer_fingerprint(tok)
    if marker.get("fingerprint") != got:
        raise EmbeddedTokenizerError(
            f"the embedded tokenizer asset {path} is not the tokenizer its {_MARKER} names "
            f"(fingerprint {got[:12]} != {str(marker.get('fingerprint'))[:12]}); restore it "
            f"from the repository (git checkout -- {path})"
        )
    return tok


def embedded_tokenizer() -> PreTrainedTokenizerFast:
    """The embedded tokenizer: the shipped asset `kdlite/assets/tokenizer`, checked against its
    recorded fingerprint (which every shipped tiny model's `kdlite_base.json` also records).
    Returns a fresh copy per call, so callers may modify it."""
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(ASSET.glob("*")))
    return copy.deepcopy(_load_asset(str(ASSET), stamp))


# Files of which a folder needs at least one to hold a tokenizer (fast, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(name_or_path: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    """`"embedded"` -> the embedded tokenizer; else a local folder or a Hub id (cache only when
    HF_HUB_OFFLINE=1). A folder without tokenizer files is refused by name: transformers would
    otherwise build an empty tokenizer from a model's config.json alone."""
    if name_or_path == "embedded":
        return embedded_tokenizer()
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise TokenizerNotFoundError(
            f"tokenizer folder {str(folder)!r} has no tokenizer: none of {list(TOKENIZER_FILES)} "
            "is in it (a model folder saved without its tokenizer?). Point at the folder that "
            'holds tokenizer.json, e.g. the model\'s original Hub folder, or use "embedded".'
        )
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    except Exception as err:  # noqa: BLE001 - every failure gets the same actionable message
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = (
            "it is not a local folder and the Hub is offline (HF_HUB_OFFLINE=1) with no cached copy"
            if offline and not Path(name_or_path).exists()
            else "loading failed"
        )
        raise TokenizerNotFoundError(
            f"tokenizer {name_or_path!r} (revision {revision}) could not be resolved offline: "
            f"{where} ({type(err).__name__}: {err}). Point at a local folder holding "
            "tokenizer.json and tokenizer_config.json (e.g. one made with `hf download "
            f"{name_or_path} --include 'tokenizer*' --local-dir <dir>` on a machine with network), "
            'or use "embedded".'
        ) from err
    if len(tok) < 2:
        raise TokenizerNotFoundError(
            f"tokenizer {name_or_path!r} (revision {revision}) loaded with {len(tok)} token(s): "
            "its files hold no vocabulary"
        )
    return tok


def vocab_fingerprint(tok) -> str:
    """sha256 of the id -> token map (added tokens included): what two models must share for
    logit-level KD. Ignores eos/pad and the chat template, which legitimately differ between
    Qwen3 (eos <|im_end|>) and Qwen3-Base (eos <|endoftext|>). ~0.5 s for Qwen3's 151,669 ids."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        n = backend.get_vocab_size(with_added_tokens=True)
        tokens = [backend.id_to_token(i) for i in range(n)]
    else:  # a tokenizer without a `tokenizers` backend
        vocab = tok.get_vocab()
        by_id = {i: t for t, i in vocab.items()}
        tokens = [by_id.get(i) for i in range(max(vocab.values()) + 1)]
    joined = "\x00".join("\x01" if t is None else t for t in tokens)  # \x01: an unused id
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tok) -> str:
    """sha256 of vocab + special tokens + chat template: a cache key for anything tokenised."""
    specials = {
        "named": {k: getattr(tok, k, None) for k in ("bos_token", "eos_token", "pad_token")},
        "all": sorted(tok.all_special_tokens),
        "chat_template": tok.chat_template,
    }
    h = hashlib.sha256(vocab_fingerprint(tok).encode("ascii"))
    h.update(json.dumps(specials, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()
