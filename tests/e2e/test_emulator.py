"""test_emulator.py - checks the hub emulator itself (no hubmirror involved),
so that a failing e2e test points at hubmirror and not at the test bed."""

import http.client
import json
import urllib.parse

import lib
from lib import check, SAMPLE_REPO


def request(url, method="GET", headers=None, body=None):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    path = u.path + ("?" + u.query if u.query else "")
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def get_file(emu, path, headers=None):
    st, h, _ = request("%s/%s/resolve/main/%s" % (emu.url, SAMPLE_REPO, path), headers=headers)
    loc = h["location"]
    if loc.startswith("/"):
        loc = emu.url + loc
    return st, h, request(loc, headers=headers)


def test_emu_repo_info_and_tree(t):
    emu = t.emu(page_size=3)
    src = lib.sample_files()
    st, _, body = request(emu.url + "/api/models/%s?blobs=true" % SAMPLE_REPO)
    info = json.loads(body)
    check(st == 200 and {s["rfilename"] for s in info["siblings"]} == set(src), "siblings")
    check(info["sha"] == lib.commit_id(SAMPLE_REPO, 0), "sha")
    url = emu.url + "/api/models/%s/tree/main?recursive=true" % SAMPLE_REPO
    paths = []
    while url:
        st, h, body = request(url)
        check(st == 200, "tree status %d" % st)
        for e in json.loads(body):
            if e["type"] == "file":
                paths.append(e["path"])
                data = src[e["path"]]
                if e["path"] in lib.SAMPLE_LFS:
                    check(e["lfs"]["oid"] == lib.sha256_bytes(data), "lfs oid")
                else:
                    check(e["oid"] == lib.git_oid(data), "git oid of %s" % e["path"])
        link = h.get("link")
        url = link[1:link.index(">")] if link else None
    check(sorted(paths) == sorted(src), "paged tree: %s" % paths)


def test_emu_redirects_and_ranges(t):
    emu = t.emu()
    src = lib.sample_files()
    st, h, (st2, h2, data) = get_file(emu, "README.md")
    check(st == 307 and h["location"].startswith("/api/resolve-cache/"), "relative 307")
    check(h["etag"] == '"%s"' % lib.git_oid(src["README.md"]), "etag")
    check(st2 == 200 and data == src["README.md"], "README bytes")
    st, h, (st2, h2, data) = get_file(emu, "model.safetensors", {"Range": "bytes=0-0"})
    check(st == 302 and h["location"].startswith(emu.cdn), "absolute 302 to the CDN")
    check(h["x-linked-etag"] == '"%s"' % lib.sha256_bytes(src["model.safetensors"]), "x-linked-etag")
    check(int(h["x-linked-size"]) == len(src["model.safetensors"]), "x-linked-size")
    size = len(src["model.safetensors"])
    check(st2 == 206 and data == src["model.safetensors"][:1]
          and h2["content-range"] == "bytes 0-0/%d" % size, "bytes=0-0")
    _, _, (st2, h2, data) = get_file(emu, "model.safetensors", {"Range": "bytes=-10"})
    check(st2 == 206 and data == src["model.safetensors"][-10:], "suffix range")
    _, _, (st2, h2, data) = get_file(emu, "model.safetensors", {"Range": "bytes=%d-" % size})
    check(st2 == 416 and h2["content-range"] == "bytes */%d" % size, "416")
    st, h, _ = request("%s/%s/resolve/main/nope" % (emu.url, SAMPLE_REPO))
    check(st == 404 and h["x-error-code"] == "EntryNotFound", "EntryNotFound")
    st, h, _ = request("%s/%s/resolve/nope/README.md" % (emu.url, SAMPLE_REPO))
    check(st == 404 and h["x-error-code"] == "RevisionNotFound", "RevisionNotFound")
    st, h, _ = request("%s/api/models/org/nope" % emu.url)
    check(st == 404 and h["x-error-code"] == "RepoNotFound", "RepoNotFound")


def test_emu_faults(t):
    emu = t.emu()
    src = lib.sample_files()["model.safetensors"]
    emu.faults([{"match": "model.safetensors", "kind": "corrupt", "offset": 7}])
    _, _, (st, _, data) = get_file(emu, "model.safetensors")
    check(st == 200 and data != src and data[:7] == src[:7] and data[8:] == src[8:], "corrupt")
    emu.faults([{"match": "model.safetensors", "kind": "ratelimit", "retry_after": 3}])
    _, _, (st, h, _) = get_file(emu, "model.safetensors")
    check(st == 429 and h["retry-after"] == "3", "ratelimit")
    emu.faults([{"match": "model.safetensors", "kind": "norange"}])
    _, _, (st, _, data) = get_file(emu, "model.safetensors", {"Range": "bytes=5-9"})
    check(st == 200 and data == src, "norange")
    emu.faults([{"match": "model.safetensors", "kind": "drop"}])
    try:
        get_file(emu, "model.safetensors")
        check(False, "drop did not cut the body")
    except http.client.IncompleteRead:
        pass
    emu.faults([{"match": "api", "kind": "badjson"}])
    st, _, body = request(emu.url + "/api/models/%s" % SAMPLE_REPO)
    try:
        json.loads(body)
        check(False, "badjson is valid JSON")
    except ValueError:
        pass
    log = emu.log()
    check(all(not e["auth"] for e in log), "auth recorded")
    check(any(e["host"] == "cdn" for e in log), "CDN requests are logged")


def test_emu_gated_and_private(t):
    repos = [lib.sample_repo("org/g", gated="manual", tokens=["hf_a"]),
             lib.sample_repo("org/p", private=True, tokens=["hf_a"])]
    emu = t.emu(repos, tokens=["hf_b"])
    u = "%s/org/g/resolve/main/README.md" % emu.url
    check(request(u)[0] == 401 and request(u)[1]["x-error-code"] == "GatedRepo", "gated 401")
    st, h, _ = request(u, headers={"Authorization": "Bearer hf_b"})
    check(st == 403 and h["x-error-code"] == "GatedRepo", "gated 403")
    check(request(u, headers={"Authorization": "Bearer hf_a"})[0] == 307, "gated with token")
    st, h, _ = request(emu.url + "/api/models/org/p")
    check(st == 401 and h["x-error-code"] == "RepoNotFound", "private")
    check(request(emu.url + "/api/models/org/p", headers={"Authorization": "Bearer hf_a"})[0]
          == 200, "private with token")
