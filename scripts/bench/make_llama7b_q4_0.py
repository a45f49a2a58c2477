#!/usr/bin/env python3
"""Writes a GGUF file with LLaMA-7B's shapes, random weights quantised to Q4_0.

What it writes: a llama.cpp-style GGUF (`general.architecture = llama`) with LLaMA-7B's
`llama.*` metadata (embedding_length 4096, feed_forward_length 11008, block_count 32,
head_count 32, head_count_kv 32, context_length 2048, rms epsilon 1e-6, rope freq_base 10000,
rope dimension_count 128, vocab_size 32000), the 291 tensors of llama.cpp's converter
(token_embd, output_norm, output and nine per block: attn_norm, ffn_norm in F32, all ones;
attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, token_embd and output in
Q4_0, quantised with gguf-py's `gguf.quants.quantize` from normal(0, 0.02) values drawn by a
numpy Generator seeded with `--seed`), and a byte-level BPE tokenizer (`tokenizer.ggml.model
= gpt2`, the only kind calm reads from GGUF) taken from SmolLM2's GGUF file and cut to the
first 32000 tokens: merges are kept only where both halves and their concatenation are among
those tokens, special ids only where they are below 32000. About 3.8 GB.

Why: no LLaMA-7B weights are needed to measure what a 7B model costs calm. The file has the
exact tensor shapes and quantisation of a Q4_0 LLaMA-7B, so loading it with calm (`inspect
generate`) gives the peak RSS and tokens/s of quantised inference at 7B scale; the output
text is meaningless.

Run (with the pins of scripts/bench/requirements.txt, gguf 0.19.0 and numpy):

    python3 scripts/bench/make_llama7b_q4_0.py /tmp/llama7b-q4_0.gguf
    python3 scripts/bench/make_llama7b_q4_0.py /tmp/llama-tiny-q4_0.gguf \\
        --layers 2 --hidden 256 --intermediate 512 --heads 4    # a small one for tests

`--tokenizer-from` defaults to `$CALM_HOME/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`
(CALM_HOME defaults to ~/.cache/calm; `scripts/fetch_models.sh smollm2` fetches it).

How long: the 7B file (3,792,428,704 bytes, 6,738,415,616 parameters) took 131 s wall with a
peak RSS of 232 MB (`/usr/bin/time -v`, gguf 0.19.0, numpy 2.4.6, one core of a 2-core machine
that was also building): numpy's normal draws and gguf-py's Q4_0 quantiser run at some 50
million values a second. Memory stays small because one chunk of at most 2^24 f32 values is
generated and quantised at a time, and only one quantised tensor (at most 74 MB, token_embd or
output) is held before it is written. The file is written as `<output>.part` and renamed when
complete. The tiny variant takes about 4 s, mostly reading the tokenizer.

The last line, on stdout, is `<path> <size> bytes <seconds> s`; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType, GGUFValueType

# Values per generated chunk: 64 MiB of f32, plus gguf-py's temporaries while quantising it.
CHUNK_VALUES = 1 << 24
STD = 0.02
QTYPE = GGMLQuantizationType.Q4_0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_tokenizer_path() -> Path:
    home = os.environ.get("CALM_HOME") or os.path.expanduser("~/.cache/calm")
    return Path(home) / "models" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Write a GGUF with LLaMA-7B shapes and random Q4_0 weights.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("output", type=Path, help="the .gguf file to write")
    p.add_argument("--seed", type=int, default=0, help="numpy Generator seed")
    p.add_argument(
        "--tokenizer-from",
        type=Path,
        default=default_tokenizer_path(),
        help="a GGUF file with a gpt2 (byte-level BPE) tokenizer",
    )
    p.add_argument("--layers", type=int, default=32, help="block_count")
    p.add_argument("--hidden", type=int, default=4096, help="embedding_length")
    p.add_argument("--intermediate", type=int, default=11008, help="feed_forward_length")
    p.add_argument("--heads", type=int, default=32, help="head_count (= head_count_kv)")
    p.add_argument("--vocab", type=int, default=32000, help="vocab_size (tokens kept)")
    p.add_argument("--context", type=int, default=2048, help="context_length")
    args = p.parse_args()
    block = gguf.GGML_QUANT_SIZES[QTYPE][0]
    problems = []
    for name in ("layers", "hidden", "intermediate", "heads", "vocab", "context"):
        if getattr(args, name) < 1:
            problems.append(f"--{name} must be positive")
    for name in ("hidden", "intermediate"):
        if getattr(args, name) % block:
            problems.append(f"--{name} must be a multiple of {block} (the Q4_0 block)")
    if args.hidden % args.heads or (args.hidden // args.heads) % 2:
        problems.append("--hidden must be --heads times an even head dimension")
    if problems:
        p.error("; ".join(problems))
    if args.output.suffix.lower() != ".gguf":
        log(f"warning: calm recognises GGUF files by the .gguf extension, not {args.output.name}")
    return args


def read_tokenizer(path: Path, n_vocab: int) -> list[tuple[str, object, GGUFValueType, GGUFValueType | None]]:
    """The `tokenizer.*` metadata of `path` cut to `n_vocab` tokens, as (key, value, type,
    array element type), with the types the source file used."""
    if not path.is_file():
        sys.exit(f"error: no tokenizer file {path} (run scripts/fetch_models.sh smollm2, or pass --tokenizer-from)")
    reader = gguf.GGUFReader(path)
    fields = {k: f for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    model = fields.get("tokenizer.ggml.model")
    if model is None or model.contents() != "gpt2":
        found = None if model is None else model.contents()
        sys.exit(f"error: {path}: tokenizer.ggml.model is {found!r}; calm reads only gpt2 tokenizers from GGUF")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    if len(tokens) < n_vocab:
        sys.exit(f"error: {path} has {len(tokens)} tokens, fewer than the {n_vocab} needed")
    kept = tokens[:n_vocab]
    vocab = set(kept)
    out = []
    for key, field in fields.items():
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        if main == GGUFValueType.ARRAY and len(field.types) != 2:
            log(f"  skipping {key}: nested arrays")
            continue
        if key == "tokenizer.ggml.merges":
            merges = []
            for m in field.contents():
                a, sep, b = m.partition(" ")
                if sep and a in vocab and b in vocab and a + b in vocab:
                    merges.append(m)
            log(f"  {key}: kept {len(merges)} of {len(field.data)}")
            out.append((key, merges, main, sub))
        elif main == GGUFValueType.ARRAY and len(field.data) == len(tokens):
            # Per-token arrays: tokens, token_type, scores.
            out.append((key, field.contents(slice(0, n_vocab)), main, sub))
        elif main == GGUFValueType.ARRAY:
            log(f"  skipping {key}: an array of {len(field.data)}, not one per token")
        elif key.endswith("_token_id"):
            token_id = field.contents()
            if token_id < n_vocab:
                out.append((key, token_id, main, sub))
            else:
                log(f"  dropping {key} = {token_id}: not below {n_vocab}")
        else:
            # model, pre, chat_template, add_bos_token, add_space_prefix, ...
            out.append((key, field.contents(), main, sub))
    log(f"  {len(kept)} of {len(tokens)} tokens, pre-tokenizer {fields['tokenizer.ggml.pre'].contents() if 'tokenizer.ggml.pre' in fields else None!r}")
    return out


def tensor_plan(args: argparse.Namespace) -> list[tuple[str, tuple[int, ...], GGMLQuantizationType]]:
    """(name, numpy shape, type) in llama.cpp's naming; projections are [out, in]."""
    h, i, v = args.hidden, args.intermediate, args.vocab
    F32 = GGMLQuantizationType.F32
    plan = [("token_embd.weight", (v, h), QTYPE)]
    for n in range(args.layers):
        b = f"blk.{n}"
        plan += [
            (f"{b}.attn_norm.weight", (h,), F32),
            (f"{b}.attn_q.weight", (h, h), QTYPE),
            (f"{b}.attn_k.weight", (h, h), QTYPE),
            (f"{b}.attn_v.weight", (h, h), QTYPE),
            (f"{b}.attn_output.weight", (h, h), QTYPE),
            (f"{b}.ffn_norm.weight", (h,), F32),
            (f"{b}.ffn_gate.weight", (i, h), QTYPE),
            (f"{b}.ffn_up.weight", (i, h), QTYPE),
            (f"{b}.ffn_down.weight", (h, i), QTYPE),
        ]
    plan += [("output_norm.weight", (h,), F32), ("output.weight", (v, h), QTYPE)]
    return plan


def random_q4_0(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """normal(0, STD) values of `shape`, quantised chunk by chunk into one uint8 array of
    the Q4_0 byte shape; at most CHUNK_VALUES f32 values exist at a time."""
    rows, cols = shape
    out = np.empty(gguf.quant_shape_to_byte_shape(shape, QTYPE), dtype=np.uint8)
    step = max(1, CHUNK_VALUES // cols)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        chunk = rng.standard_normal((stop - start, cols), dtype=np.float32)
        chunk *= np.float32(STD)
        out[start:stop] = gguf.quants.quantize(chunk, QTYPE)
        del chunk
    return out


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    h, heads = args.hidden, args.heads

    log(f"tokenizer from {args.tokenizer_from}")
    tokenizer = read_tokenizer(args.tokenizer_from, args.vocab)

    part = args.output.with_name(args.output.name + ".part")
    writer = gguf.GGUFWriter(part, "llama")
    writer.add_name(f"LLaMA-7B shapes, random Q4_0 weights (seed {args.seed})" if
                    (args.layers, h, args.intermediate, heads) == (32, 4096, 11008, 32)
                    else f"LLaMA-shaped, random Q4_0 weights (seed {args.seed})")
    writer.add_context_length(args.context)
    writer.add_embedding_length(h)
    writer.add_block_count(args.layers)
    writer.add_feed_forward_length(args.intermediate)
    writer.add_rope_dimension_count(h // heads)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(args.vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value, vtype, sub in tokenizer:
        writer.add_key_value(key, value, vtype, sub_type=sub)
    del tokenizer

    plan = tensor_plan(args)
    total = 0
    for name, shape, qtype in plan:
        if qtype == QTYPE:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, QTYPE)
            nbytes = int(np.prod(byte_shape))
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=QTYPE)
        else:
            nbytes = 4 * int(np.prod(shape))
            writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes)
        total += nbytes
    n_params = sum(int(np.prod(s)) for _, s, _ in plan)
    log(f"writing {part}: {len(plan)} tensors, {n_params:,} parameters, {total / 1e9:.2f} GB of tensor data")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    rng = np.random.default_rng(args.seed)
    written = 0
    for name, shape, qtype in plan:
        if qtype == QTYPE:
            data = random_q4_0(rng, shape)
        else:
            data = np.ones(shape, dtype=np.float32)
        writer.write_tensor_data(data)
        written += data.nbytes
        del data
        if not name.startswith("blk.") or name.endswith(".ffn_down.weight"):
            log(f"  {name.rsplit('.', 2)[0] if name.startswith('blk.') else name}: "
                f"{written / 1e9:.2f} / {total / 1e9:.2f} GB, {time.monotonic() - started:.0f} s")
    writer.close()
    os.replace(part, args.output)

    size = args.output.stat().st_size
    print(f"{args.output} {size} bytes {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
