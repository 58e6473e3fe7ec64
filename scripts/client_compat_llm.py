"""The checks of scripts/client-compat-llm.sh: OpenAI's client streaming and answering chat and
text completions from `hipinfer serve --model FILE.gguf`, each against the library's own
greedy answer (`hipinfer generate --json`). One line per check; exits 1 on any difference."""

import json
import subprocess
import sys

import openai

address, binary, model = sys.argv[1:4]
client = openai.OpenAI(base_url=f"http://{address}/v1", api_key="unused")
failures = []
MAX_TOKENS = 24


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


def library(prompt, chat):
    """The library's own greedy text, from `hipinfer generate --json`."""
    args = [binary, "generate", "--model", model, "--max-tokens", str(MAX_TOKENS), "--json"]
    if chat:
        args.append("--chat")
    output = subprocess.run(args + [prompt], check=True, capture_output=True, text=True)
    return json.loads(output.stdout)


question = "What is the capital of France?"
want = library(question, chat=True)
messages = [{"role": "user", "content": question}]

stream = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", messages=messages,
                                        max_tokens=MAX_TOKENS, temperature=0, stream=True,
                                        stream_options={"include_usage": True})
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
check("streamed chat text = hipinfer generate --chat", "".join(pieces) == want["text"],
      f"{''.join(pieces)!r} vs {want['text']!r}")
check("streamed chat finish_reason", finish == want["finish_reason"], f"{finish}")
check("streamed chat usage", usage is not None
      and usage.completion_tokens == len(want["generated_ids"])
      and usage.prompt_tokens == len(want["prompt_ids"]), f"{usage}")

answer = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", messages=messages,
                                        max_tokens=MAX_TOKENS, temperature=0)
check("chat answer = stream", answer.choices[0].message.content == "".join(pieces))

plain = "The three primary colors are"
want = library(plain, chat=False)
text = client.completions.create(model="SmolLM2-135M-Instruct.Q4_1", prompt=plain,
                                 max_tokens=MAX_TOKENS, temperature=0)
check("completion text = hipinfer generate", text.choices[0].text == want["text"],
      f"{text.choices[0].text!r} vs {want['text']!r}")

try:
    client.completions.create(model="SmolLM2-135M-Instruct.Q4_1", prompt=plain, n=2)
    check("n = 2 is refused", False, "it was accepted")
except openai.UnprocessableEntityError as error:
    check("n = 2 is refused with 422 naming n", "n:" in str(error), str(error))

sys.exit(1 if failures else 0)
