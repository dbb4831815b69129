#!/usr/bin/env python3
"""Reference renderings of the chat templates in Fixtures/templates (run by ChatTemplateDifferentialTests).

Renders every template on several conversations with `jinja2` the way Hugging Face transformers
does (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its `tojson`
filter and `raise_exception`), and prints one JSON object: {template: [{conversation, add_generation_prompt,
output | error}]}.

Usage: template_reference.py TEMPLATES_DIR
"""
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city — «now»",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"},
                                                           "unit": {"type": "string", "enum": ["c", "f"]}},
                         "required": ["city"]}}}]

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Hello!"}]},
    {"messages": [{"role": "system", "content": "You are terse. "}, {"role": "user", "content": " What is 2+2? "}]},
    {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Tell me a joke\nplease."}]},
    {"messages": [{"role": "user", "content": "Ünïcödé 日本語 \"quotes\" \\ back"}, {"role": "assistant", "content": "ok"},
                  {"role": "user", "content": "again"}]},
    {"messages": [{"role": "user", "content": "What's the weather in Paris?"},
                  {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
                  {"role": "tool", "name": "get_weather", "content": "22 degrees"}],
     "tools": TOOLS},
    {"messages": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Oslo?"}], "tools": TOOLS},
    {"messages": [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "odd order"}]},
    # A tool call with a 9-character id and a tool result that names it (Mistral v0.3 / Nemo require
    # both), then an assistant answer with surrounding spaces and a last user turn.
    {"messages": [{"role": "system", "content": "Answer with tools."}, {"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                  {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "22 degrees"},
                  {"role": "assistant", "content": "  It is 22 degrees.  "}, {"role": "user", "content": "Thanks"}],
     "tools": TOOLS},
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main():
    directory = sys.argv[1]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    out = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".jinja"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            template = env.from_string(f.read())
        results = []
        for k, conversation in enumerate(CONVERSATIONS):
            for agp in (True, False):
                variables = dict(conversation)
                variables.update(add_generation_prompt=agp, bos_token="<s>", eos_token="</s>")
                entry = {"conversation_json": json.dumps(conversation), "add_generation_prompt": agp}
                try:
                    entry["output"] = template.render(**variables)
                except jinja2.exceptions.TemplateError as e:
                    entry["error"] = str(e)
                except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
                    # Python errors a template can trigger (e.g. str + None): ours must fail too.
                    entry["error"] = f"{type(e).__name__}: {e}"
                results.append(entry)
        out[name] = results
    json.dump(out, sys.stdout, ensure_ascii=True)


if __name__ == "__main__":
    main()
