// generate.mjs PROMPT N MODEL.gguf... - loads each GGUF with llama.cpp
// (node-llama-cpp, CPU build), tokenizes PROMPT without specials, runs N
// greedy tokens after BOS + PROMPT, and prints one JSON object:
// {path: {ids, gen, bos, eos, vocab}}.
import {getLlama} from "node-llama-cpp";

const [, , prompt, n, ...paths] = process.argv;
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const out = {};
for (const p of paths) {
	const model = await llama.loadModel({modelPath: p});
	const ids = Array.from(model.tokenize(prompt));
	const ctx = await model.createContext({contextSize: 128});
	const seq = ctx.getSequence();
	const gen = [];
	for await (const t of seq.evaluate([model.tokens.bos, ...ids], {temperature: 0})) {
		gen.push(t);
		if (gen.length >= Number(n))
			break;
	}
	out[p] = {ids, gen, bos: model.tokens.bos, eos: model.tokens.eos, text: model.detokenize(ids)};
	await ctx.dispose();
	await model.dispose();
}
console.log(JSON.stringify(out));
