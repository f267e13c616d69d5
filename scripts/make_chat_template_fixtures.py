#!/usr/bin/env python3
"""Renders real chat templates with transformers' own chat-template renderer (jinja2 compiled
the way transformers compiles it) into tests/fixtures/chat_templates/cases.json, the reference
that tests/test_chat_template.cpp holds engine/chat_template/ to, byte for byte.

Needs transformers (scripts/requirements-fixtures.txt pins 5.24.0) and jinja2 >= 3.1.6.
Usage: python3 scripts/make_chat_template_fixtures.py
"""
import json
import pathlib

import jinja2
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

# Template strings as published in the models' tokenizer_config.json (the Falcon one is the
# "User:/Falcon:" layout of falcon-180B-chat; the last two exercise the rest of the subset).
TEMPLATES = {
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "llama2": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    "mistral_instruct": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "falcon_chat": "{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}{% if message['role'] == 'system' %}{{ 'System: ' }}{% elif message['role'] == 'user' %}{{ 'User: ' }}{% elif message['role'] == 'assistant' %}{{ 'Falcon: ' }}{% endif %}{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '\\n' + 'Falcon:' }}{% endif %}",
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "gemma": "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
    "qwen2": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "mistral_v3_style": """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
        {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif %}
    {%- set ns.index = ns.index + 1 %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
""",
    # Whitespace control, comments, lstrip/trim of indented blocks, and most expressions.
    "kitchen_sink": """{# A header comment #}
{% set ns = namespace(system='', turns=0, last_user=none) %}
{% for m in messages if m.role == 'system' %}
    {% set ns.system = ns.system ~ m.content | trim %}
{% endfor %}
<sys>{{ ns.system if ns.system else 'default system' }}</sys>
  {%- for m in messages if m.role != 'system' %}
  {% set ns.turns = ns.turns + 1 %}
  {% if m.role == 'user' %}{% set ns.last_user = loop.index %}{% endif %}
[{{ loop.index }}/{{ loop.length }}|{{ loop.index0 }}|{{ loop.first }}|{{ loop.last }}] {{ m['role'] | upper }}: {{ m.content.strip() }}
    {%+ if m.content.startswith('Hi') or m.content.endswith('?') %}(q){% endif %}
  {%- endfor %}

turns={{ ns.turns }} last_user={{ ns.last_user }} n={{ messages | length }} {{ messages[-1].role | lower }}
{{ messages[1:] | length }} {{ (messages | first).role }} {{ missing | default('dflt') }} {{ missing is defined }} {{ ns is not none }}
{{ 'a,b,,c'.split(',') | tojson }} {{ {'k': [1, 2.5, true, none, "q\\"x"]} | tojson }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 7 / 2 }} {{ -3 + 2 * 4 }}
{{ 'x' in 'xyz' }} {{ 'user' not in ['system'] }} {{ '  pad  '.lstrip() ~ '|' ~ '  pad  '.rstrip() }} {{ 'Hello World'.lower().upper() }}
{%- if add_generation_prompt %}

<assistant>
{%- endif %}
""",
}

CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Hi there!"}],
    "system_user": [
        {"role": "system", "content": "You are Falcon, a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "multi_turn": [
        {"role": "user", "content": "Hi, who are you?"},
        {"role": "assistant", "content": "  I am an assistant.  "},
        {"role": "user", "content": "Tell me a joke.\nA short one, with \"quotes\" and ünïcödé."},
    ],
    "system_multi_turn": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "bad_order": [
        {"role": "assistant", "content": "I speak first."},
        {"role": "user", "content": "That is not allowed."},
    ],
}

BOS, EOS = "<s>", "</s>"


def main():
    cases = []
    for tname, template in TEMPLATES.items():
        for cname, messages in CONVERSATIONS.items():
            for agp in (False, True):
                case = {"name": f"{tname}/{cname}/agp={int(agp)}", "template": template, "messages": messages,
                        "add_generation_prompt": agp, "bos_token": BOS, "eos_token": EOS}
                try:
                    rendered, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=agp,
                                                        bos_token=BOS, eos_token=EOS)
                    case["expected"] = rendered[0]
                except jinja2.exceptions.TemplateError as e:
                    case["expected_error"] = str(e)
                cases.append(case)
    out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/chat_templates/cases.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"generator": "scripts/make_chat_template_fixtures.py", "transformers": transformers.__version__,
            "jinja2": jinja2.__version__}
    out.write_text(json.dumps({"meta": meta, "cases": cases}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
