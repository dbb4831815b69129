"""Calls our api_server through the official OpenAI SDK; prints one JSON line of what it saw.

Usage: openai_checks.py BASE_URL API_KEY   (run by Tests/ServeTests/OpenAIClientTests.swift,
which compares the answers with the engine's own).
"""
import json
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)
out = {}

out["models"] = [m.id for m in client.models.list().data]
for name, k in (("no_key", ""), ("wrong_key", "sk-wrong")):
    try:
        openai.OpenAI(base_url=base, api_key=k or "none", max_retries=0).models.list()
        out[name] = "accepted"
    except openai.AuthenticationError:
        out[name] = "AuthenticationError"

question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
r = client.chat.completions.create(model="smollm2", messages=question, temperature=0, max_tokens=32,
                                   logprobs=True, top_logprobs=5)
out["chat"] = r.choices[0].message.content
out["chat_finish"] = r.choices[0].finish_reason
out["chat_usage"] = {"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens,
                     "total_tokens": r.usage.total_tokens}
out["logprobs"] = [{"token": t.token, "logprob": t.logprob, "top": [a.logprob for a in t.top_logprobs]}
                   for t in r.choices[0].logprobs.content]

text, usage = "", None
for chunk in client.chat.completions.create(model="smollm2", messages=question, temperature=0, max_tokens=32,
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.usage:
        usage = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": chunk.usage.completion_tokens,
                 "total_tokens": chunk.usage.total_tokens}
    for c in chunk.choices:
        text += c.delta.content or ""
out["chat_stream"] = text
out["stream_usage"] = usage

r = client.chat.completions.create(model="smollm2", messages=question, n=2, temperature=1.0, seed=3, max_tokens=8)
out["n2"] = [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]

r = client.chat.completions.create(model="smollm2", messages=question, temperature=0, max_tokens=4)
out["length_finish"] = r.choices[0].finish_reason
out["length_tokens"] = r.usage.completion_tokens

counting = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
r = client.chat.completions.create(model="smollm2", messages=counting, temperature=0, max_tokens=60, stop=["7", "zzz"])
out["stop"] = r.choices[0].message.content
out["stop_finish"] = r.choices[0].finish_reason

r = client.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=8)
out["completion"] = r.choices[0].text
out["completion_stream"] = "".join(c.choices[0].text for c in client.completions.create(
    model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=8, stream=True) if c.choices)

print(json.dumps(out))
