// chat.mjs - the reference chat-template renderer for tests/e2e/test_chat.py:
// @huggingface/jinja (the Jinja implementation of transformers.js).
//
//   node chat.mjs SPEC.json   SPEC = {"now": EPOCH_SECONDS, "templates": {NAME: {"path", "bos", "eos",
//                                     ["tokenizer"]}}, "cases": [VARS...]}; prints one JSON object:
//                                     {NAME: [{"text": ...[, "ids": [...]]} or {"error": ...} per case]}
// strftime_now formats the fixed time "now", as the C side is told to. With
// "tokenizer" (a tokenizer.json; its tokenizer_config.json beside it), "ids"
// are @huggingface/tokenizers' encoding of the text without special tokens
// added, as transformers' apply_chat_template(tokenize=True) encodes it.
import fs from "node:fs";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const now = new Date(spec.now * 1000);
// @huggingface/jinja's strftime_now formats `new Date()` in local time: the
// test runs with TZ=UTC, and a Date made without arguments is "now"
const RealDate = Date;
globalThis.Date = class extends RealDate {
	constructor(...a) {
		if (a.length) super(...a);
		else super(spec.now * 1000);
	}
};

const out = {};
for (const [name, t] of Object.entries(spec.templates)) {
	const tpl = new Template(fs.readFileSync(t.path, "utf8"));
	let tok = null;
	if (t.tokenizer) {
		const cfgPath = t.tokenizer.replace(/tokenizer\.json$/, "tokenizer_config.json");
		const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
		tok = new Tokenizer(JSON.parse(fs.readFileSync(t.tokenizer, "utf8")), cfg);
	}
	out[name] = spec.cases.map((vars) => {
		let text;
		try {
			text = tpl.render({ bos_token: t.bos, eos_token: t.eos, ...vars });
		} catch (e) {
			return { error: String(e.message || e) };
		}
		if (!tok) return { text };
		try {
			return { text, ids: tok.encode(text, { add_special_tokens: false }).ids.map(Number) };
		} catch (e) {
			return { error: String(e.message || e) };
		}
	});
}
process.stdout.write(JSON.stringify(out));
