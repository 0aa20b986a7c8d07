// interop.mjs - runs the official @huggingface/hub client against a hub URL
// (hubmirror serve in the tests) and reports what it got, for
// tests/e2e/test_serve_interop.py.
//
// usage: node interop.mjs JOBS.json
// JOBS.json: [{"hubUrl": "http://127.0.0.1:PORT", "repo": {"type": "model", "name": "org/x"},
//              "revision": "main", "accessToken": "hf_..." (optional),
//              "downloadFile": ["path", ...],          (optional)
//              "snapshot": true, "cacheDir": "/tmp/..." (optional)}]
// Prints one line "RESULT <json>": per job {downloadFile: {path: {sha256, size} | null | {error}},
// snapshot: {folder, files: {path: {sha256, size, symlink}}} | {error}}.
// The library logs with console.debug; only the RESULT line is for the caller.
import { downloadFile, snapshotDownload } from "@huggingface/hub";
import { createHash } from "node:crypto";
import { readFile, lstat, readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
const describe = (e) => `${e?.name ?? "Error"}: ${e?.message ?? e}${e?.statusCode ? ` (HTTP ${e.statusCode})` : ""}`;

async function walk(dir, root, out) {
	for (const name of await readdir(dir)) {
		const p = join(dir, name);
		const l = await lstat(p);
		const s = await stat(p);
		if (s.isDirectory()) {
			await walk(p, root, out);
		} else {
			const data = await readFile(p);
			out[relative(root, p)] = { sha256: sha256(data), size: data.length, symlink: l.isSymbolicLink() };
		}
	}
	return out;
}

async function runJob(job) {
	const common = { repo: job.repo, revision: job.revision, hubUrl: job.hubUrl };
	if (job.accessToken) common.accessToken = job.accessToken;
	const res = {};
	if (job.downloadFile) {
		res.downloadFile = {};
		for (const path of job.downloadFile) {
			try {
				const blob = await downloadFile({ ...common, path });
				if (!blob) {
					res.downloadFile[path] = null;
					continue;
				}
				const buf = Buffer.from(await blob.arrayBuffer());
				res.downloadFile[path] = { sha256: sha256(buf), size: buf.length };
			} catch (e) {
				res.downloadFile[path] = { error: describe(e) };
			}
		}
	}
	if (job.snapshot) {
		try {
			const folder = await snapshotDownload({ ...common, cacheDir: job.cacheDir });
			res.snapshot = { folder, files: await walk(folder, folder, {}) };
		} catch (e) {
			res.snapshot = { error: describe(e) };
		}
	}
	return res;
}

const jobs = JSON.parse(await readFile(process.argv[2], "utf8"));
const results = [];
for (const job of jobs) results.push(await runJob(job));
process.stdout.write("RESULT " + JSON.stringify(results) + "\n");
