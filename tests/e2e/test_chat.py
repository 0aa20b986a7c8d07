"""test_chat.py - chat templates (engine/chat.h) against @huggingface/jinja
(tests/js-tok/chat.mjs): the real chat templates of the families the engine
runs (tests/chat-templates: Llama 3.1/3.2, Qwen2.5, Qwen3, SmolLM3, Gemma 2,
Gemma 3, Phi-3/3.5, Phi-4, Mistral v0.2 and Nemo) render to the same text for
the same messages, raise for the same conversations, and hostile templates
get a clear one-line error in bounded time and memory. The library is driven
through a small C program compiled against libhubmirror.a."""

import json
import os
import resource
import struct
import subprocess

import lib
from lib import check
import test_tokenizer as ttok

ROOT = lib.ROOT
FIX = os.path.join(ROOT, "tests", "chat-templates")
NOW = 1785542400  # 2026-08-01 00:00 UTC: strftime_now on both sides

# name -> (file, bos_token, eos_token)
TEMPLATES = {
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3": ("llama-3-simple.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>"),
    "qwen3": ("Qwen-Qwen3-0.6B.jinja", "", "<|im_end|>"),
    "smollm3": ("HuggingFaceTB-SmolLM3-3B.jinja", "", "<|im_end|>"),
    "gemma2": ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>"),
    "gemma3": ("google-gemma-3-it.jinja", "<bos>", "<eos>"),
    "phi3": ("microsoft-Phi-3-mini.jinja", "<s>", "<|endoftext|>"),
    "phi3.5": ("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>"),
    "phi4": ("microsoft-phi-4.jinja", "<|endoftext|>", "<|endoftext|>"),
    "mistral": ("mistralai-Mistral-7B-Instruct-v0.2.jinja", "<s>", "</s>"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
}

U, A, S = "user", "assistant", "system"


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {
                                             "city": {"type": "string", "description": "the city"}},
                                             "required": ["city"]}}}

CASES = [
    {"messages": msgs((U, "Hello!")), "add_generation_prompt": True},
    {"messages": msgs((U, "Hello!")), "add_generation_prompt": False},
    {"messages": msgs((S, "You are terse."), (U, "Hi"), (A, "Hello."), (U, "What is 2+2?")),
     "add_generation_prompt": True},
    {"messages": msgs((U, "  spaced out  \n\n"), (A, "ok \n"), (U, "caf\u00e9 \u4f60\u597d \U0001f600 \"q\" 'a'")),
     "add_generation_prompt": True},
    {"messages": msgs((U, "{{ not code }} {% if %} {# x #}"), (A, "<think>\nhmm\n</think>\n\nDone.")),
     "add_generation_prompt": False},
    {"messages": msgs((U, "Think?"), (A, "<think>\nreasoning\n</think>\n\nYes."), (U, "Again")),
     "add_generation_prompt": True, "enable_thinking": False},
    {"messages": msgs((S, "Use tools."), (U, "Weather in Paris?")), "tools": [TOOL],
     "add_generation_prompt": True},
    # content as a list of parts: only Gemma 3's template reads them (the others
    # print the list, which Python's Jinja does with str() and @huggingface/jinja
    # refuses to trim): compared for gemma3 only
    {"messages": [{"role": "user", "content": [{"type": "text", "text": " parts "}]}],
     "add_generation_prompt": True, "_only": "gemma3"},
    {"messages": msgs((U, "one"), (U, "two")), "add_generation_prompt": True},
    {"messages": msgs((A, "first")), "add_generation_prompt": False},
]

DRIVER = r"""
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "engine/chat.h"
#include "engine/tokenizer.h"
/* chat-driver SPEC.json -> {NAME: [{"text"} or {"error"} per case]} (the shape chat.mjs prints);
 * chat-driver -t TEMPLATE [VARS]: one render, the text on stdout, an error on stderr (exit 1);
 * chat-driver -m MODEL [VARS]: the same with the model's own template (eng_chat_open);
 * chat-driver -i DIR SPEC.json: DIR's template and tokenizer over SPEC's cases ->
 *   [{"text", "ids"} or {"error"} per case], the text encoded without another BOS */
static int ids_mode(const char *dir, const char *specpath)
{
	struct hm_ctx ctx = {0};
	struct eng_tok *t = NULL;
	struct eng_chat *c = NULL;
	char tj[4096], tc[4096];
	json_error_t je;
	json_t *spec = json_load_file(specpath, 0, &je), *res = json_array(), *cv;
	size_t i;
	snprintf(tj, sizeof(tj), "%s/tokenizer.json", dir);
	snprintf(tc, sizeof(tc), "%s/tokenizer_config.json", dir);
	if (!spec || eng_tok_open_json(&ctx, tj, tc, &t) || eng_chat_open(&ctx, dir, t, &c)) {
		fprintf(stderr, "error: %s\n", ctx.errmsg);
		return 1;
	}
	json_array_foreach (json_object_get(spec, "cases"), i, cv) {
		char *vars = json_dumps(cv, 0), *text = NULL;
		int32_t *ids = NULL;
		size_t len, n = 0;
		if (eng_chat_render_json(&ctx, c, vars, (time_t)json_integer_value(json_object_get(spec, "now")), &text,
					 &len) ||
		    eng_tok_encode(t, text, len, 0, &ids, &n)) {
			json_array_append_new(res, json_pack("{s:s}", "error", ctx.errmsg));
		} else {
			json_t *a = json_array();
			for (size_t k = 0; k < n; k++)
				json_array_append_new(a, json_integer(ids[k]));
			json_array_append_new(res, json_pack("{s:s%, s:o}", "text", text, len, "ids", a));
		}
		free(ids);
		free(text);
		free(vars);
	}
	json_dumpf(res, stdout, JSON_ENSURE_ASCII);
	json_decref(res);
	json_decref(spec);
	eng_chat_free(c);
	eng_tok_free(t);
	return 0;
}
static char *slurp(const char *p, size_t *n)
{
	FILE *f = fopen(p, "rb");
	char *b;
	long sz;
	if (!f || fseek(f, 0, SEEK_END) || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		return NULL;
	b = malloc((size_t)sz + 1);
	if (!b || fread(b, 1, (size_t)sz, f) != (size_t)sz)
		return NULL;
	b[sz] = 0;
	fclose(f);
	*n = (size_t)sz;
	return b;
}
int main(int argc, char **argv)
{
	struct hm_ctx ctx = {0};
	json_error_t je;
	json_t *spec, *out, *tpls, *cases, *tv;
	const char *name;
	if (argc == 4 && !strcmp(argv[1], "-i"))
		return ids_mode(argv[2], argv[3]);
	if (argc >= 3 && (!strcmp(argv[1], "-t") || !strcmp(argv[1], "-m"))) {
		size_t n = 0;
		int model = argv[1][1] == 'm';
		char *tpl = model ? strdup("") : slurp(argv[2], &n), *text = NULL;
		struct eng_chat *c = NULL;
		if (!tpl)
			return 3;
		if ((model ? eng_chat_open(&ctx, argv[2], NULL, &c) : eng_chat_new(&ctx, tpl, n, "<s>", "</s>", &c)) ||
		    eng_chat_render_json(&ctx, c, argc > 3 ? argv[3] : "{\"messages\": []}", 0, &text, &n)) {
			fprintf(stderr, "error: %s\n", ctx.errmsg);
			eng_chat_free(c);
			free(tpl);
			return 1;
		}
		fwrite(text, 1, n, stdout);
		free(text);
		eng_chat_free(c);
		free(tpl);
		return 0;
	}
	if (argc < 2 || !(spec = json_load_file(argv[1], 0, &je)))
		return 2;
	out = json_object();
	tpls = json_object_get(spec, "templates");
	cases = json_object_get(spec, "cases");
	json_object_foreach (tpls, name, tv) {
		size_t n, i;
		char *tpl = slurp(json_string_value(json_object_get(tv, "path")), &n);
		struct eng_chat *c = NULL;
		json_t *res = json_array(), *cv;
		if (!tpl)
			return 3;
		if (eng_chat_new(&ctx, tpl, n, json_string_value(json_object_get(tv, "bos")),
				 json_string_value(json_object_get(tv, "eos")), &c)) {
			fprintf(stderr, "%s: %s\n", name, ctx.errmsg);
			return 1;
		}
		json_array_foreach (cases, i, cv) {
			char *vars = json_dumps(cv, 0), *text = NULL;
			size_t len;
			if (eng_chat_render_json(&ctx, c, vars, (time_t)json_integer_value(json_object_get(spec, "now")),
						 &text, &len))
				json_array_append_new(res, json_pack("{s:s}", "error", ctx.errmsg));
			else
				json_array_append_new(res, json_pack("{s:s%}", "text", text, len));
			free(text);
			free(vars);
		}
		json_object_set_new(out, name, res);
		eng_chat_free(c);
		free(tpl);
	}
	json_dumpf(out, stdout, JSON_ENSURE_ASCII);
	json_decref(out);
	json_decref(spec);
	return 0;
}
"""


def driver(t):
    return lib.build_driver(t, "chat-driver", DRIVER)


def render_both(t, templates, cases):
    spec = {"now": NOW, "cases": cases,
            "templates": {n: {"path": os.path.join(FIX, f), "bos": b, "eos": e} for n, (f, b, e) in templates.items()}}
    path = os.path.join(t.tmp, "chat-spec.json")
    with open(path, "w") as fh:
        json.dump(spec, fh)
    node = ttok.ensure_js()
    env = dict(os.environ, TZ="UTC")
    js = subprocess.run([node, os.path.join(ttok.JS, "chat.mjs"), path], capture_output=True, text=True, timeout=120,
                        env=env)
    check(js.returncode == 0, "chat.mjs failed (exit %d): %s" % (js.returncode, js.stderr[-2000:]))
    c = subprocess.run([driver(t), path], capture_output=True, text=True, timeout=120, env=env)
    check(c.returncode == 0, "chat-driver failed (exit %d): %s" % (c.returncode, c.stderr[-2000:]))
    return json.loads(js.stdout), json.loads(c.stdout)


def test_chat_templates_match_huggingface_jinja(t):
    ref, ours = render_both(t, TEMPLATES, CASES)
    rendered = errors = 0
    for name in TEMPLATES:
        for i, (r, o) in enumerate(zip(ref[name], ours[name])):
            if CASES[i].get("_only", name) != name:
                continue
            where = "%s case %d (%s)" % (name, i, json.dumps(CASES[i])[:200])
            if "error" in r:
                check("error" in o, "%s: @huggingface/jinja raised %r, ours rendered %r" % (where, r["error"],
                                                                                          o.get("text")))
                errors += 1
                continue
            check("text" in o, "%s: ours failed (%s), @huggingface/jinja rendered %r" % (where, o.get("error"),
                                                                                       r["text"]))
            check(o["text"] == r["text"], "%s: rendered differently\n ours: %r\n  ref: %r" % (where, o["text"],
                                                                                           r["text"]))
            rendered += 1
    # every template renders the plain conversations, and the alternation
    # checks (Gemma, Mistral) do raise
    check(rendered >= len(TEMPLATES) * 6, "only %d renders compared" % rendered)
    check(errors >= 2, "no template raised on a broken conversation")


def test_chat_follows_python_jinja_where_the_js_reference_differs(t):
    """transformers renders with Python's Jinja; @huggingface/jinja differs in
    a few places the real templates reach (SmolLM3's content.lstrip("\n"),
    trim of a non-string): these follow Python."""
    d = driver(t)
    cases = [
        ("{{ '\tok\n'.lstrip('\n') }}|{{ 'xxaxx'.strip('x') }}|{{ '  a  '.rstrip() }}", "\tok\n|a|  a"),
        ("{{ [1, 'a'] | trim }}|{{ none }}|{{ 1.5 }}|{{ 2 ** 10 }}|{{ 7 // 2 }}|{{ -7 % 3 }}", "[1, 'a']|None|1.5|1024|3|2"),
        ("{{ 'a,b,,c'.split(',') | length }}|{{ 'x y  z'.split() | join('-') }}|{{ 'abc'[::-1] }}", "4|x-y-z|cba"),
        ("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;"),
        ("{% for i in range(5) if i is odd %}{{ loop.index }}:{{ i }}{% if not loop.last %},{% endif %}{% endfor %}",
         "1:1,2:3"),
        ("{% set ns = namespace(n=0) %}{% for i in range(10) %}{% if i > 3 %}{% break %}{% endif %}"
         "{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", "6"),
        ("{% set x %}in{{ 1 + 1 }}{% endset %}{{ x | upper }}", "IN2"),
        ("{{ {'b': 1, 'a': [true, none, 'q\"']} | tojson }}", '{"b": 1, "a": [true, null, "q\\""]}'),
        ("{{ {'a': [1]} | tojson(indent=2) }}", '{\n  "a": [\n    1\n  ]\n}'),
        ("{{ 1 + 2 * 3 - 4 // 3 }}|{{ not 1 in [2] }}|{{ 'a' ~ 1 + 1 }}|{{ 1 < 2 and 2 <= 2 or false }}|"
         "{{ 3 not in [1, 2] and not false }}|{{ -2 ** 2 }}", "6|True|a2|True|True|4"),
        ("{{ ['A', 'b'] | map('lower') | join(',') }}|{{ [' x '] | map('trim') | list | tojson }}|"
         "{{ [1, 2] | map('string') | join }}|{{ ['a-b'] | map('replace', '-', '+') | join }}", 'a,b|["x"]|12|a+b'),
    ]
    for src, want in cases:
        p = os.path.join(t.tmp, "py.jinja")
        with open(p, "w") as fh:
            fh.write(src)
        r = subprocess.run([d, "-t", p], capture_output=True, text=True, timeout=30)
        check(r.returncode == 0, "%r: %s" % (src, r.stderr))
        check(r.stdout == want, "%r rendered %r, want %r" % (src, r.stdout, want))


def test_chat_template_of_a_model(t):
    """eng_chat_open: tokenizer_config.json's chat_template (a string, or the
    "default" entry of a list) with its bos/eos tokens (strings or objects),
    chat_template.jinja, a GGUF's tokenizer.chat_template; none is a clear error."""
    d = driver(t)
    v = json.dumps({"messages": msgs((U, "hi")), "add_generation_prompt": True})
    tpl = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}" \
          "{% if add_generation_prompt %}[assistant]{% endif %}"
    forms = {
        "string": {"chat_template": tpl, "bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": False}},
        "list": {"chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": tpl}],
                 "bos_token": "<s>", "eos_token": "</s>"},
    }
    for name, cfg in forms.items():
        m = os.path.join(t.tmp, "m-" + name)
        os.makedirs(m)
        with open(os.path.join(m, "tokenizer_config.json"), "w") as fh:
            json.dump(cfg, fh)
        r = subprocess.run([d, "-m", m, v], capture_output=True, text=True, timeout=30)
        check(r.returncode == 0 and r.stdout == "<s>[user]hi</s>[assistant]", "%s: %r %r" % (name, r.stdout, r.stderr))
    m = os.path.join(t.tmp, "m-jinja")
    os.makedirs(m)
    with open(os.path.join(m, "chat_template.jinja"), "w") as fh:
        fh.write(tpl + "\n")
    r = subprocess.run([d, "-m", m, v], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and r.stdout == "[user]hi[assistant]", "chat_template.jinja: %r %r" % (r.stdout, r.stderr))
    # a GGUF carries it as tokenizer.chat_template
    g = os.path.join(t.tmp, "t.gguf")
    kvs = [ttok.gguf_kv("general.architecture", 8, ttok.gguf_str("llama")),
           ttok.gguf_kv("tokenizer.chat_template", 8, ttok.gguf_str(tpl))]
    with open(g, "wb") as fh:
        fh.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    r = subprocess.run([d, "-m", g, v], capture_output=True, text=True, timeout=30)
    check(r.returncode == 0 and r.stdout == "[user]hi[assistant]", "gguf: %r %r" % (r.stdout, r.stderr))
    m = os.path.join(t.tmp, "m-none")
    os.makedirs(m)
    r = subprocess.run([d, "-m", m, v], capture_output=True, text=True, timeout=30)
    check(r.returncode == 1 and "has no chat template" in r.stderr, "no template: %r" % r.stderr)
    # tokenizer_config.json is read by formats/hfdir.h: a broken one is its one-line error
    for bad in ('[1]', '{"chat_template": 5}', '{"bos_token": [1], "chat_template": "x"}'):
        with open(os.path.join(m, "tokenizer_config.json"), "w") as fh:
            fh.write(bad)
        r = subprocess.run([d, "-m", m, v], capture_output=True, text=True, timeout=30)
        err = r.stderr.strip()
        check(r.returncode == 1 and "tokenizer_config.json" in err and err.count("\n") == 0,
              "broken tokenizer_config.json %s: %r" % (bad, r.stderr))


def sanitized():
    """Whether the library was built with sanitizers (make SANITIZE=...)."""
    try:
        with open(os.path.join(lib.ROOT, ".build-flags")) as fh:
            return "-fsanitize" in fh.read()
    except OSError:
        return False


def limited(cmd, timeout=30):
    """Runs cmd with 1 GiB of address space; returns the CompletedProcess.
    Under ASan/TSan, whose shadow memory needs terabytes of address space,
    without the limit: the plain build's run checks the bound."""
    def lim():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=None if sanitized() else lim)


def test_chat_hostile_templates_fail_cleanly(t):
    d = driver(t)
    hostile = {
        "unterminated-tag": ("{% for m in messages %}{{ m.content }", "unterminated"),
        "unterminated-block": ("{% for m in messages %}{{ m.content }}", "endfor"),
        "unterminated-comment": ("hi {# never closed", "unterminated comment"),
        "unterminated-string": ("{{ 'abc }}", "unterminated string"),
        "deep-if": ("{% if true %}" * 5000 + "x" + "{% endif %}" * 5000, "nested too deeply"),
        "deep-parens": ("{{ " + "(" * 100000 + "1" + ")" * 100000 + " }}", "nested too deeply"),
        "deep-not": ("{{ " + "not " * 100000 + "1 }}", "nested too deeply"),
        "huge-loop": ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                      "too many steps|MiB"),
        "huge-string": ("{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}", "MiB"),
        "doubling": ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                     "{% endfor %}{{ ns.s|length }}", "too large"),
        "raise": ("{{ raise_exception('nope: roles') }}", "raise_exception: nope: roles"),
        "macro": ("{% macro f() %}x{% endmacro %}", "unsupported"),
        "stray-end": ("a{% endif %}b", "unexpected"),
        "bad-char": ("{{ 1 $ 2 }}", "unexpected character"),
        "call-nonfunc": ("{{ messages() }}", "not callable"),
        "bad-filter": ("{{ 1 | frobnicate }}", "unsupported filter 'frobnicate'"),
    }
    for name, (src, want) in hostile.items():
        p = os.path.join(t.tmp, name + ".jinja")
        with open(p, "w") as fh:
            fh.write(src)
        r = limited([d, "-t", p])
        check(r.returncode == 1, "%s: exit %d (want 1: an error), stderr %r" % (name, r.returncode, r.stderr[-300:]))
        err = r.stderr.strip()
        check(err.count("\n") == 0 and err.startswith("error: chat template"),
              "%s: not a one-line chat template error: %r" % (name, err[:300]))
        check(any(w in err for w in want.split("|")), "%s: error %r does not say %r" % (name, err[:300], want))
    # a template over the size cap is refused before parsing
    p = os.path.join(t.tmp, "big.jinja")
    with open(p, "w") as fh:
        fh.write("x" * (2 << 20))
    r = limited([d, "-t", p])
    check(r.returncode == 1 and "KiB" in r.stderr, "2 MiB template: %r" % r.stderr[-300:])
