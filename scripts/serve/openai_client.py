#!/usr/bin/env python3
"""The official `openai` client against `infer serve` (docs/serve.md), unchanged but for its
base URL: it lists the model, asks for a comment on a photo sent as a data URL, whole and
streamed, checks that both give the same text (greedy decoding), and that a refused request
arrives as the client's own `BadRequestError` with calm's error code.

    python -m venv .venv && .venv/bin/pip install -r scripts/serve/requirements.txt
    .venv/bin/python scripts/serve/openai_client.py --base-url http://127.0.0.1:8080/v1 \\
        --photo data/samples/mate-backgrounds__Aqua.jpg

tests/serve.rs runs it (CI sets CALM_OPENAI_PYTHON to such a Python).
"""
import argparse
import base64
import mimetypes
import sys

import openai
from openai import OpenAI


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the server's /v1 URL")
    parser.add_argument("--photo", required=True, help="a JPEG, PNG or WebP file")
    parser.add_argument("--max-tokens", type=int, default=12)
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    kind = mimetypes.guess_type(args.photo)[0] or "image/jpeg"
    with open(args.photo, "rb") as f:
        url = f"data:{kind};base64,{base64.b64encode(f.read()).decode()}"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "Comment on this photo."},
            ],
        }
    ]

    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens)
    choice = whole.choices[0]
    assert whole.object == "chat.completion", whole
    assert whole.model == model, (whole.model, model)
    assert choice.message.role == "assistant", choice
    assert choice.finish_reason in ("stop", "length"), choice
    assert whole.usage.prompt_tokens > 0, whole.usage
    assert 0 <= whole.usage.completion_tokens <= args.max_tokens, whole.usage
    text = choice.message.content
    print(f"openai client: model {model}, whole: {text!r} ({choice.finish_reason})")

    pieces, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=args.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
    streamed = "".join(pieces)
    print(f"openai client: streamed: {streamed!r} ({finish}) in {len(pieces)} chunks")
    if streamed != text or finish != choice.finish_reason:
        print("openai client: whole and streamed completions differ", file=sys.stderr)
        return 1
    if usage is None or usage.completion_tokens != whole.usage.completion_tokens:
        print(f"openai client: streamed usage {usage} differs from {whole.usage}", file=sys.stderr)
        return 1

    try:
        client.chat.completions.create(model=model, messages=messages, extra_body={"colour": 1})
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        if body.get("code") != "bad_json" or "colour" not in str(body.get("message")):
            print(f"openai client: unexpected error body {e.body!r}", file=sys.stderr)
            return 1
    else:
        print("openai client: an unknown field was accepted", file=sys.stderr)
        return 1
    print("openai client: whole and streamed completions agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
