// reference.mjs - independent reference tokenizers for tests/e2e/test_tokenizer.py.
//
//   node reference.mjs export llama2 OUT.json   Llama 2's vocabulary and merges (as embedded in
//                                               llama-tokenizer-js) written as a tokenizer.json
//   node reference.mjs export llama3 OUT.json   the same for Llama 3 (llama3-tokenizer-js)
//   node reference.mjs encode SPEC.json         SPEC = {"strings": [...], "json": [paths...]};
//                                               prints one JSON object: ids per string from
//                                               llama2, llama3 and @huggingface/tokenizers over
//                                               each tokenizer.json in "json" (BOS per its config)
import fs from "node:fs";
import llama2 from "llama-tokenizer-js";
import llama3 from "llama3-tokenizer-js";
import { Tokenizer } from "@huggingface/tokenizers";

const SP = "\u2581";

// merges in priority order, as "a b" strings (neither family's tokens hold a space)
function mergesOf(tok) {
	return [...tok.merges.entries()].sort((a, b) => a[1] - b[1]).map((e) => e[0]);
}

function exportLlama2(out) {
	const vocab = {};
	llama2.vocabById.forEach((s, i) => {
		if (!(s in vocab)) vocab[s] = i;
	});
	const special = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
		normalized: false, special: true });
	return {
		version: "1.0", truncation: null, padding: null,
		added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
		normalizer: { type: "Sequence", normalizers: [
			{ type: "Prepend", prepend: SP },
			{ type: "Replace", pattern: { String: " " }, content: SP }] },
		pre_tokenizer: null,
		post_processor: { type: "TemplateProcessing",
			single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
			pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
				{ SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
			special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } } },
		decoder: { type: "Sequence", decoders: [
			{ type: "Replace", pattern: { String: SP }, content: " " },
			{ type: "ByteFallback" }, { type: "Fuse" },
			{ type: "Strip", content: " ", start: 1, stop: 0 }] },
		model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null,
			end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false,
			vocab, merges: mergesOf(llama2) },
	};
}

const LLAMA3_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function exportLlama3(out) {
	const vocab = {};
	const added = [];
	llama3.vocabById.forEach((s, i) => {
		if (i >= 128000)
			added.push({ id: i, content: s, single_word: false, lstrip: false, rstrip: false,
				normalized: false, special: true });
		else if (!(s in vocab))
			vocab[s] = i;
	});
	return {
		version: "1.0", truncation: null, padding: null, added_tokens: added,
		normalizer: null,
		pre_tokenizer: { type: "Sequence", pretokenizers: [
			{ type: "Split", pattern: { Regex: LLAMA3_RE }, behavior: "Isolated", invert: false },
			{ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] },
		post_processor: { type: "Sequence", processors: [
			{ type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
			{ type: "TemplateProcessing",
				single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
				pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
					{ SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
				special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [128000], tokens: ["<|begin_of_text|>"] } } }] },
		decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
		model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
			end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true,
			vocab, merges: mergesOf(llama3) },
	};
}

const [mode, what, out] = process.argv.slice(2);
if (mode === "export") {
	const tj = what === "llama2" ? exportLlama2() : what === "llama3" ? exportLlama3() : null;
	if (!tj) throw new Error("unknown vocabulary " + what);
	fs.writeFileSync(out, JSON.stringify(tj));
	console.log(JSON.stringify({ vocab: Object.keys(tj.model.vocab).length, merges: tj.model.merges.length,
		added: tj.added_tokens.length }));
} else if (mode === "encode") {
	const spec = JSON.parse(fs.readFileSync(what, "utf8"));
	const res = { llama2: [], llama3: [], json: {} };
	for (const s of spec.strings) {
		res.llama2.push(llama2.encode(s, true, true));
		res.llama3.push(llama3.encode(s, { bos: true, eos: false }));
	}
	for (const p of spec.json || []) {
		const cfgPath = p.replace(/tokenizer\.json$/, "tokenizer_config.json");
		const cfg = p !== cfgPath && fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
		const tok = new Tokenizer(JSON.parse(fs.readFileSync(p, "utf8")), cfg);
		res.json[p] = spec.strings.map((s) => {
			const ids = tok.encode(s).ids.map(Number);
			return { ids, decoded: tok.decode(ids, { skip_special_tokens: true }) };
		});
	}
	process.stdout.write(JSON.stringify(res));
} else {
	console.error("usage: node reference.mjs export llama2|llama3 OUT.json | encode SPEC.json");
	process.exit(2);
}
