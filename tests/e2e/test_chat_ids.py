"""test_chat_ids.py - the token ids a chat prompt becomes, against
transformers' JavaScript twins: for each family's real chat template
(tests/chat-templates) over a tokenizer laid out as that family's
(Llama 3's 128k vocabulary as Llama 3's and Qwen2's tokenizer.json, Llama 2's
32k SentencePiece vocabulary as Mistral's, Gemma's and Phi-3's),
@huggingface/jinja renders and @huggingface/tokenizers encodes the text
without adding special tokens (as apply_chat_template(tokenize=True) does);
the engine's ids must be the same:
  - the library (eng_chat_open + eng_chat_render_json + eng_tok_encode with
    add_bos 0) over every conversation of test_chat.CASES;
  - `hubmirror run --chat --json` (prompt_ids: what it feeds the engine) on
    a small checkpoint with that tokenizer, with one BOS exactly when the
    template writes one, though the tokenizers add BOS by default."""

import json
import os
import shutil
import subprocess

import archlib
import lib
from lib import check
import test_arch_gemma as tg
import test_arch_phi3 as tp
import test_arch_qwen3 as tq
import test_chat as tch
import test_qwen2 as q2
import test_tokenizer as ttok

# layout -> the templates (test_chat.TEMPLATES names) rendered with it
LAYOUTS = {
    "llama3": ["llama3.1", "llama3.2", "llama3"],
    "qwen2": ["qwen2.5", "qwen3", "smollm3", "phi4"],
    "gemma": ["gemma2", "gemma3"],
    "phi3": ["phi3", "phi3.5"],
    "llama2": ["mistral", "mistral-nemo"],
}


# (system, user) for `run --chat [--system]`
RUN_CASES = [(None, "Hello!"), ("You are terse.", "caf\u00e9 \u4f60\u597d \U0001f600  <|im_end|> </s> <s>")]


def run_vars(system, user):
    return {"messages": ([{"role": "system", "content": system}] if system else []) +
            [{"role": "user", "content": user}], "add_generation_prompt": True}


def layout(t, name):
    """(tokenizer.json, tokenizer_config.json) dicts for layout name, with
    the real vocabularies tests/js-tok exports."""
    if name == "llama3":
        tok = json.load(open(ttok.export(t, "llama3"), encoding="utf-8"))
        return tok, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                     "tokenizer_class": "PreTrainedTokenizerFast"}
    if name == "qwen2":
        src = json.load(open(ttok.export(t, "llama3"), encoding="utf-8"))
        vocab = src["model"]["vocab"]
        merges = [m.split(" ", 1) if isinstance(m, str) else m for m in src["model"]["merges"]]
        tok, tcfg = q2.qwen2_tokenizer(vocab, merges)
        for a in tok["added_tokens"]:
            a["id"] = max(vocab.values()) + 1 + q2.ADDED.index(a["content"])
        tcfg["added_tokens_decoder"] = {str(a["id"]): {k: v for k, v in a.items() if k != "id"}
                                        for a in tok["added_tokens"]}
        tcfg["eos_token"] = "<|im_end|>"
        return tok, tcfg
    src = json.load(open(ttok.export(t, "llama2"), encoding="utf-8"))
    vocab = sorted(src["model"]["vocab"], key=lambda s: src["model"]["vocab"][s])
    if name == "gemma":
        vocab = tg.SPECIALS[:4] + vocab[3:] + tg.SPECIALS[4:]
        tok, tcfg = tg.gemma_tokenizer(vocab, src["model"]["merges"])
        ids = {s: i for i, s in enumerate(vocab)}
        tok["model"]["vocab"] = ids
        for a in tok["added_tokens"]:
            a["id"] = ids[a["content"]]
        tok["post_processor"]["special_tokens"]["<bos>"]["ids"] = [ids["<bos>"]]
        return tok, tcfg
    if name == "phi3":
        return tp.spm_tokenizer(vocab, src["model"]["merges"])
    return src, {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                 "unk_token": "<unk>", "legacy": False, "tokenizer_class": "LlamaTokenizer"}


def vocab_size(tok):
    ids = list(tok["model"]["vocab"].values()) + [a["id"] for a in tok["added_tokens"]]
    return max(ids) + 1


def model_dir(t, name, tok, tcfg, template, base=None):
    """A small checkpoint (Qwen3's shape: the architecture does not matter
    to the prompt's ids) with tokenizer tok and chat template template;
    base: a directory made so before whose tokenizer and weights it links."""
    d = os.path.join(t.tmp, "m-%s-%s" % (name, template))
    tcfg = dict(tcfg, chat_template=open(os.path.join(tch.FIX, tch.TEMPLATES[template][0]), encoding="utf-8").read())
    if base:
        os.makedirs(d)
        for f in ("config.json", "tokenizer.json", "model.safetensors"):
            os.link(os.path.join(base, f), os.path.join(d, f))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
            json.dump(tcfg, fh)
        return d
    V = vocab_size(tok)
    cfg = tq.config(V, hidden_size=16, intermediate_size=16, num_hidden_layers=1, head_dim=8,
                    num_attention_heads=2, num_key_value_heads=1)
    archlib.write_model(d, archlib.make_weights(tq.FAM, cfg, 1), cfg, tok, tcfg)
    return d


def text_of(tok, tcfg, key):
    v = tcfg.get(key)
    return (v.get("content") if isinstance(v, dict) else v) or ""


def references(t, templates, cases):
    spec = {"now": tch.NOW, "cases": cases, "templates": templates}
    path = os.path.join(t.tmp, "ids-spec-%d.json" % len(os.listdir(t.tmp)))
    with open(path, "w") as fh:
        json.dump(spec, fh)
    node = ttok.ensure_js()
    js = subprocess.run([node, os.path.join(ttok.JS, "chat.mjs"), path], capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, TZ="UTC"))
    check(js.returncode == 0, "chat.mjs failed (exit %d): %s" % (js.returncode, js.stderr[-2000:]))
    return json.loads(js.stdout), path


def test_chat_ids_match_huggingface(t):
    drv = tch.driver(t)
    compared = bos_checked = 0
    for name, templates in LAYOUTS.items():
        tok, tcfg = layout(t, name)
        bos, eos = text_of(tok, tcfg, "bos_token"), text_of(tok, tcfg, "eos_token")
        dirs = {}
        spec = {}
        for tn in templates:
            d = dirs[tn] = model_dir(t, name, tok, tcfg, tn, dirs[templates[0]] if dirs else None)
            spec[tn] = {"path": os.path.join(tch.FIX, tch.TEMPLATES[tn][0]), "bos": bos, "eos": eos,
                        "tokenizer": os.path.join(d, "tokenizer.json")}
        ref, specpath = references(t, spec, tch.CASES + [run_vars(*c) for c in RUN_CASES])
        for tn in templates:
            r = subprocess.run([drv, "-i", dirs[tn], specpath], capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, "chat-driver -i %s: %s" % (tn, r.stderr[-2000:]))
            ours = json.loads(r.stdout)
            for i, (w, o) in enumerate(zip(ref[tn][:len(tch.CASES)], ours)):
                if tch.CASES[i].get("_only", tn) != tn or "error" in w:
                    continue
                where = "%s on the %s layout, case %d" % (tn, name, i)
                check("ids" in o, "%s: ours failed: %s" % (where, o.get("error")))
                check(o["text"] == w["text"], "%s: rendered differently:\n ours %r\n  ref %r"
                      % (where, o["text"][:300], w["text"][:300]))
                check(o["ids"] == w["ids"], "%s: ids differ:\n ours %s\n  ref %s" % (where, o["ids"][:60], w["ids"][:60]))
                compared += 1
            # what `run --chat` feeds the engine: the same ids, one BOS at most
            # (a template printing today's date, Llama 3.2's, is compared
            # above at a fixed time only: run formats the real one)
            dated = "strftime_now" in open(spec[tn]["path"], encoding="utf-8").read()
            for k, (system, user) in enumerate([] if dated else RUN_CASES):
                w = ref[tn][len(tch.CASES) + k]
                args = ["run", dirs[tn], "--chat", "-n", "1", "--json", "-p", user]
                if system:
                    args += ["--system", system]
                if "error" in w:
                    t.fails(*args, words=("chat template",))
                    continue
                got = t.ok(*args).json()
                check(got["prompt_ids"] == w["ids"], "run --chat %s (%s layout) case %d fed\n  %s\n  want %s"
                      % (tn, name, k, got["prompt_ids"][:60], w["ids"][:60]))
                check(got["prompt_tokens"] == len(w["ids"]), "prompt_tokens %r" % got["prompt_tokens"])
                if bos:
                    bid = tok["model"]["vocab"].get(bos, next((a["id"] for a in tok["added_tokens"]
                                                               if a["content"] == bos), None))
                    # (the user's text holds a literal "<s>": a special token, as in transformers)
                    lead = got["prompt_ids"][:2].count(bid)
                    check(lead == int(w["text"].startswith(bos)), "%s: the prompt starts with %d BOS (%d): %s"
                          % (tn, lead, bid, got["prompt_ids"][:10]))
                    bos_checked += 1
    check(compared >= 13 * 5, "only %d conversations compared" % compared)
    check(bos_checked >= 10, "BOS checked only %d times" % bos_checked)


test_chat_ids_match_huggingface.timeout = 900


def test_run_chat_needs_a_template(t):
    """--chat on a model without a chat template is a clear error; without
    --chat the prompt goes as it is, BOS per the tokenizer."""
    d = os.path.join(t.tmp, "plain")
    vocab, merges = q2.train_bpe(q2.CORPUS, 120)
    tok, tcfg = q2.qwen2_tokenizer(vocab, merges)
    del tcfg["chat_template"]
    V = vocab_size(tok)
    cfg = tq.config(V, hidden_size=16, intermediate_size=16, num_hidden_layers=1, head_dim=8,
                    num_attention_heads=2, num_key_value_heads=1)
    archlib.write_model(d, archlib.make_weights(tq.FAM, cfg, 1), cfg, tok, tcfg)
    t.fails("run", d, "--chat", "-n", "1", "-p", "hi", words=("has no chat template",))
    t.fails("run", d, "--system", "be brief", "-n", "1", "-p", "hi", words=("has no chat template",))
    j = t.ok("run", d, "-n", "1", "--json", "-p", "<|im_start|>hi").json()
    check(j["prompt_ids"][0] == V - 2 and j["prompt_tokens"] == len(j["prompt_ids"]), "%r" % j["prompt_ids"])
    shutil.rmtree(d)
