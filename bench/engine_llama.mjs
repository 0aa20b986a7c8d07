// engine_llama.mjs PROMPT N THREADS RUNS CTX MODEL.gguf - llama.cpp's side of
// bench/engine.sh, through node-llama-cpp (tests/js-gguf/node_modules, CPU
// build; JS_GGUF names another directory holding that node_modules).
//
// Loads MODEL once (mmap, as llama.cpp does by default), then RUNS times: a
// fresh context of CTX tokens on THREADS threads, BOS + PROMPT (tokenized
// without specials, as hubmirror run does), N greedy tokens. Timestamps
// (performance.now) around the token iterator of LlamaContextSequence.evaluate:
//   prompt_s = from the call to the first token it yields: one batch of the
//              whole prompt through the model, and the first sampling;
//   gen_s    = from the first token to the Nth: N-1 single-token evaluations
//              (each followed by a sampling), so gen_tps = (N-1)/gen_s.
// Context creation and model load are outside both. Prints one JSON object:
// {prompt_tokens, runs: [{prompt_s, gen_s, ntok, tokens}], load_s, max_rss_kib}.
import {createRequire} from "node:module";
import {dirname, join} from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const js = process.env.JS_GGUF || join(dirname(fileURLToPath(import.meta.url)), "..", "tests", "js-gguf");
const entry = createRequire(join(js, "package.json")).resolve("node-llama-cpp");
const {getLlama} = await import(pathToFileURL(entry).href);

const [, , prompt, nArg, thrArg, runsArg, ctxArg, path] = process.argv;
const n = Number(nArg), threads = Number(thrArg), runs = Number(runsArg), ctxSize = Number(ctxArg);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error", maxThreads: threads});
let t = performance.now();
const model = await llama.loadModel({modelPath: path, gpuLayers: 0});
const load_s = (performance.now() - t) / 1000;
const ids = Array.from(model.tokenize(prompt));
const input = [model.tokens.bos, ...ids];
const out = {prompt_tokens: input.length, load_s, runs: []};
for (let r = 0; r < runs; r++) {
	const ctx = await model.createContext({contextSize: ctxSize, threads, batchSize: 512});
	const seq = ctx.getSequence();
	const gen = [];
	let t1 = 0, t2 = 0;
	const t0 = performance.now();
	for await (const tok of seq.evaluate(input, {temperature: 0})) {
		const now = performance.now();
		if (gen.length === 0)
			t1 = now;
		t2 = now;
		gen.push(tok);
		if (gen.length >= n)
			break;
	}
	out.runs.push({prompt_s: (t1 - t0) / 1000, gen_s: (t2 - t1) / 1000, ntok: gen.length, tokens: gen});
	await ctx.dispose();
}
out.max_rss_kib = process.resourceUsage().maxRSS;
await model.dispose();
console.log(JSON.stringify(out));
