// check.mjs SPEC.json - the independent JS side of tests/e2e/archlib.py, in one
// node process: prints one JSON object with
//   parse:    {path: {metadata, tensors: [{name, shape, dtype}]}}  read by @huggingface/gguf
//   generate: {path: {ids, gen, bos, eos}}  llama.cpp (node-llama-cpp, CPU) loading
//             the GGUF, BOS (when the model adds one) + ids (token ids given) and N greedy tokens
//   chat:     [text]  @huggingface/jinja rendering each {template, messages,
//             add_generation_prompt, bos_token, eos_token}
// SPEC = {"parse": [paths], "generate": {"ids": [...], "n": N, "paths": [...]},
//         "chat": [...]}; every part optional.
import fs from "node:fs";
import { gguf } from "@huggingface/gguf";
import { Template } from "@huggingface/jinja";

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = { parse: {}, generate: {}, chat: [] };

const plain = (v) => (typeof v === "bigint" ? Number(v) : Array.isArray(v) ? v.map(plain) : v);

for (const p of spec.parse || []) {
	const { metadata, tensorInfos } = await gguf(p, { allowLocalFile: true });
	const md = {};
	for (const [k, v] of Object.entries(metadata))
		md[k] = Array.isArray(v) && v.length > 64 ? { length: v.length, head: plain(v.slice(0, 8)) } : plain(v);
	out.parse[p] = { metadata: md, tensors: tensorInfos.map((t) => ({ name: t.name, shape: plain(t.shape), dtype: t.dtype })) };
}

if (spec.generate) {
	const { getLlama } = await import("node-llama-cpp");
	const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
	for (const p of spec.generate.paths) {
		const model = await llama.loadModel({ modelPath: p });
		const ctx = await model.createContext({ contextSize: 256 });
		const seq = ctx.getSequence();
		const input = [...(spec.generate.bos ? [model.tokens.bos] : []), ...spec.generate.ids];
		const gen = [];
		for await (const t of seq.evaluate(input, { temperature: 0 })) {
			gen.push(t);
			if (gen.length >= spec.generate.n)
				break;
		}
		out.generate[p] = { gen, bos: model.tokens.bos, eos: model.tokens.eos };
		await ctx.dispose();
		await model.dispose();
	}
}

for (const c of spec.chat || []) {
	const tpl = new Template(c.template);
	out.chat.push(tpl.render({ messages: c.messages, add_generation_prompt: !!c.add_generation_prompt,
		bos_token: c.bos_token || "", eos_token: c.eos_token || "" }));
}

process.stdout.write(JSON.stringify(out));
