"""test_ui.py - the web pages of `hubmirror serve` in a real browser (headless
Chromium over the DevTools protocol, browser.py): each page against a server
holding sample repos, its numbers compared with `ls --json` and `stats --json`,
no console error and no request leaving the origin, screenshots at desktop
and phone widths checked for content; hostile names (markup, quotes,
javascript: URLs, RTL overrides) shown literally and never run; and, over
plain HTTP, sign-in (--token-file), --allow, --no-ui, and that no path of the
Hub API is taken."""

import json
import os
import re
import sqlite3
import time

import lib
from lib import check, Fail
import serve_lib as sl
from serve_lib import MODEL, REVS, DATASET, OTHER, Server, serving
from browser import Browser
from test_stats import png_pixels

HOSTILE_REPO = "evil-org/files"
# a name only the index can hold (pull validates repo ids): markup, quotes, RTL override
HOSTILE_NAME = "evil-org/<img src=x onerror=alert(1)>\"'\u202egnp.exe"
HOSTILE_FILES = {
    "<script>alert(2)</script>.txt": "a\n",
    "\"><img src=x onerror=alert(3)>.txt": "b\n",
    "javascript:alert(4)": "c\n",
    "\u202etxt.exe": "d\n",
    "dir <b>x</b>/it's & co.txt": "e\n",
}
HOSTILE_REF = "<svg onload=alert(5)>"
HOSTILE_REASON = "</td><script>alert(6)</script>"
HOSTILE_URL = "/<script>alert(7)</script>"
# screenshots are checked at half size (the PNG decoder is pure Python); HM_UI_SHOTS=DIR keeps full ones
SHOT_SCALE = 1.0 if os.environ.get("HM_UI_SHOTS") else 0.5


def shown(s):
    """What the pages show for s: invisible and bidirectional characters as [U+XXXX]."""
    return s.replace("\u202e", "[U+202E]")


def hostile_repo():
    return {"type": "model", "id": HOSTILE_REPO, "commits": [{"files": HOSTILE_FILES, "refs": ["main"]}]}


def setup(t):
    emu = sl.prefill(t, repos=sl.fixture_repos() + [hostile_repo()])
    t.ok("pull", HOSTILE_REPO, "-q")
    con = sqlite3.connect(os.path.join(t.store, "index.db"), timeout=30)
    with con:
        commit = con.execute("SELECT v.commit_sha FROM revisions v JOIN repos r ON r.id = v.repo_id"
                             " WHERE r.name = ?", (HOSTILE_REPO,)).fetchone()[0]
        con.execute("UPDATE repos SET name = ? WHERE name = ?", (HOSTILE_NAME, HOSTILE_REPO))
        con.execute("INSERT INTO refs (repo_id, name, commit_sha, updated_at) SELECT id, ?, ?, 0 FROM repos"
                    " WHERE name = ?", (HOSTILE_REF, commit, HOSTILE_NAME))
        con.execute("INSERT INTO smoke_results (repo_type, repo, commit_sha, model, pass, reason, load_s,"
                    " prompt_tps, gen_tps, peak_rss, created_at) VALUES ('model', ?, ?, ?, 0, ?, 0.5, 10, 5,"
                    " 1000, 1700000000)", (HOSTILE_NAME, commit, "<b>model</b>", HOSTILE_REASON))
    con.close()
    return emu


def wait_served(t, n, limit=20):
    """Waits until the server's batched rows hold n file transfers served."""
    deadline = time.time() + limit
    while True:
        j = t.ok("stats", "--json", "--top", "0").json()
        got = sum(e["count"] for e in j["by_endpoint"] if e["source"] == "serve")
        if got >= n or time.time() > deadline:
            check(got == n, "served transfers recorded: %d, expected %d" % (got, n))
            return j
        time.sleep(0.2)


def check_clean(b, origin, what):
    check(not b.problems(), "%s: console/log problems: %s" % (what, b.problems()))
    off = [u for u in b.requests() if not (u.startswith(origin + "/") or u.startswith("data:") or u == "about:blank")]
    check(not off, "%s: requests left the origin: %s" % (what, off))
    check(not b.dialogs(), "%s: a dialog opened: %s" % (what, b.dialogs()))
    # nothing injected: our one script, no event handler attribute, no javascript: link
    bad = b.eval("""JSON.stringify({
        scripts: [...document.scripts].map(s => s.getAttribute('src')),
        handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => /^on/i.test(a.name)))
                  .map(e => e.outerHTML.slice(0, 80)),
        js: [...document.querySelectorAll('[href],[src],[action]')].map(e => e.getAttribute('href') ||
              e.getAttribute('src') || e.getAttribute('action')).filter(u => !/^(\\/|#|\\?)/.test(u)),
        imgs: [...document.images].map(i => i.getAttribute('src')).filter(s => !s.startsWith('/ui/chart.svg')),
        pwned: typeof window.__pwned})""")
    bad = json.loads(bad)
    check(bad["scripts"] == ["/ui/app.js"], "%s: scripts on the page: %s" % (what, bad["scripts"]))
    check(not bad["handlers"], "%s: elements with event handlers: %s" % (what, bad["handlers"]))
    check(not bad["js"], "%s: links that are not paths of this origin: %s" % (what, bad["js"]))
    check(not bad["imgs"], "%s: images other than charts: %s" % (what, bad["imgs"]))


def check_screenshot(path, what, min_colors=8):
    w, h, rows, ch = png_pixels(path)
    colors, nonwhite = set(), 0
    for y in range(0, h, 4):
        row = rows[y]
        for x in range(0, w * ch, ch * 4):
            px = row[x:x + 3]
            colors.add(px)
            nonwhite += px != b"\xff\xff\xff"
    check(len(colors) >= min_colors and nonwhite > (w * h) // 16 // 50,
          "%s: screenshot %s looks blank (%d colors, %d non-white samples)" % (what, path, len(colors), nonwhite))


def charts_drawn(b, what):
    """Every chart image loaded, and has ink: drawn onto a canvas, some pixels are not white."""
    res = json.loads(b.eval("""JSON.stringify([...document.querySelectorAll('img.chart')].map(i => {
        const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        let ink = 0;
        if (i.complete && i.naturalWidth) {
            const x = c.getContext('2d'); x.drawImage(i, 0, 0);
            const d = x.getImageData(0, 0, c.width, c.height).data;
            for (let k = 0; k < d.length; k += 16) if (d[k] < 200 || d[k+1] < 200 || d[k+2] < 200) ink++;
        }
        return [i.id, i.complete, i.naturalWidth, ink]; }))"""))
    check(res, "%s: no chart images" % what)
    for cid, complete, width, ink in res:
        check(complete and width > 0, "%s: chart %s did not load: %s" % (what, cid, res))
        check(ink > 50, "%s: chart %s is blank: %s" % (what, cid, res))
    return res


def rows(b, sel, expr):
    return json.loads(b.eval("JSON.stringify([...document.querySelectorAll(%s)].map(r => %s))"
                             % (json.dumps(sel), expr)))


@serving(timeout=150)
def test_ui_pages_in_chromium(t):
    setup(t)
    srv = Server(t)
    origin = srv.url
    # traffic: files served (for the statistics), and a hostile request for the activity page
    for path in ("config.json", "model.safetensors", "config.json"):
        r = srv.get("/%s/resolve/main/%s" % (MODEL, path))
        check(r.status == 200, "GET %s: %r" % (path, r))
    r = srv.get("/datasets/%s/resolve/main/README.md" % DATASET)
    check(r.status == 200, "dataset file: %r" % r)
    check(srv.get(HOSTILE_URL).status == 404, "hostile path answered 404")
    stats = wait_served(t, 4)
    ls = t.ok("ls", "--json").json()["repos"]
    time.sleep(2.2)  # the home page rereads files served per repo after 2 s (UI_SERVED_TTL)

    b = Browser(t)
    shots = os.path.join(t.tmp, "shots")
    os.makedirs(shots)

    # ---- home, desktop ----
    b.viewport(1280, 900)
    check(b.load(origin + "/") == 200, "home: status")
    check_clean(b, origin, "home")
    got = {r[0]: r[1:] for r in rows(b, "#repotable tbody tr[data-repo]",
                                       "[r.dataset.repo, +r.cells[2].dataset.v, +r.cells[3].dataset.v,"
                                       " r.cells[1].textContent, +r.cells[5].dataset.v]")}
    want = {"%s:%s" % (r["repo_type"], r["repo"]): r for r in ls}
    check(set(got) == set(shown(k) for k in want), "home rows %s, ls --json %s" % (sorted(got), sorted(want)))
    served = {"%s:%s" % (e["repo_type"], e["repo"]): e for e in stats["served"]["repos"]}
    for key, r in want.items():
        g = got[shown(key)]
        check(g[0] == len(r["revisions"]) and g[1] == r["bytes"],
              "%s: revisions/bytes %s, ls --json %d/%d" % (key, g, len(r["revisions"]), r["bytes"]))
        check(g[2] == shown(r["repo"]), "%s: the name shown is %r" % (key, g[2]))
        check(g[3] == (served[key]["files"] if key in served else 0), "%s: files served %s" % (key, g[3]))
    check(got["model:" + MODEL][3] == 3 and got["dataset:" + DATASET][3] == 1, "files served: %s" % got)
    cards = json.loads(b.eval("JSON.stringify(Object.fromEntries([...document.querySelectorAll('.card[id]')]"
                              ".map(c => [c.id, c.dataset.v || c.textContent])))"))
    du = t.ok("du", "--json").json()
    check(int(cards["nrepos"]) == len(ls), "repo count card %s" % cards)
    for k in ("logical", "saved"):
        check(int(cards[k]) == du[k], "card %s = %s, du --json %s" % (k, cards[k], du[k]))
    check(int(cards["free"]) > 0, "free disk: %s" % cards)
    check("not configured" in b.eval("document.getElementById('objstore').textContent"), "object storage state")
    check(b.eval("document.getElementById('p2p').dataset.on") == "0" and
          "off" in b.eval("document.getElementById('p2p').textContent"), "P2P state without --p2p")
    check_screenshot(b.screenshot(os.path.join(shots, "home-desktop.png"), SHOT_SCALE), "home desktop")

    # live filtering (JS) and the same with JS off (a GET form)
    b.eval("(() => { const q = document.getElementById('q'); q.value = 'tiny';"
           " q.dispatchEvent(new Event('input', {bubbles: true})); })()")
    deadline = time.time() + 10
    while True:
        names = rows(b, "#repotable tbody tr[data-repo]", "r.dataset.repo")
        if sorted(names) == ["dataset:" + DATASET, "model:" + MODEL] or time.time() > deadline:
            break
        time.sleep(0.1)
    check(sorted(names) == ["dataset:" + DATASET, "model:" + MODEL], "live filter 'tiny': %s" % names)
    check("q=tiny" in b.eval("location.href"), "the filter is in the address: %s" % b.eval("location.href"))
    b.scripts(False)
    check(b.load(origin + "/?q=REVS&type=model") == 200, "home without JS")
    check(rows(b, "#repotable tbody tr[data-repo]", "r.dataset.repo") == ["model:" + REVS], "GET form filter")
    check(not b.problems(), "JS off: %s" % b.problems())
    b.scripts(True)

    # ---- the hostile repo, reached by its link ----
    check(b.load(origin + "/") == 200, "home again")
    href = b.eval("[...document.querySelectorAll('#repotable a')].find(a => a.textContent.includes('evil')).href")
    check(href.startswith(origin + "/ui/repo/model/evil-org/"), "hostile repo link %r" % href)
    check(b.load(href) == 200, "hostile repo page")
    check_clean(b, origin, "hostile repo page")
    text = b.eval("document.body.innerText")
    check(shown(HOSTILE_NAME) in text, "the hostile name is shown literally: %r" % text[:300])
    for name in HOSTILE_FILES:
        if "/" not in name:
            check(shown(name) in text, "file %r shown literally" % name)
    check(HOSTILE_REF in text and HOSTILE_REASON in text and "<b>model</b>" in text,
          "ref, smoke reason and model shown literally")
    check(b.eval("document.querySelectorAll('b').length") ==
          b.eval("document.querySelectorAll('.card b, tr.total b, .scaleout b').length"), "no injected <b>")
    links = rows(b, "#filetable tr.file a", "r.getAttribute('href')")
    check(all(l.startswith("/evil-org/") and "/resolve/" in l for l in links), "file links: %s" % links)
    # '/' in a name makes directories: "<script>alert(2)<" and "dir <b>x<"
    check("<script>alert(2)</\t" in text and "dir <b>x</\t" in text, "hostile directories listed: %r" % text[:3000])
    check_screenshot(b.screenshot(os.path.join(shots, "hostile.png"), SHOT_SCALE), "hostile repo")

    # ---- a repo page: files, sizes and SHA-256 as ls --json has them ----
    lsm = t.ok("ls", MODEL, "--json").json()
    check(b.load(origin + "/ui/repo/model/" + MODEL) == 200, "repo page")
    check_clean(b, origin, "repo page")
    files = {f["path"]: f for f in lsm["files"]}
    seen = {}
    for d in ["", "original"]:
        if d:
            check(b.load(origin + "/ui/repo/model/%s?rev=%s&dir=%s" % (MODEL, lsm["revision"], d)) == 200, "dir page")
        for p, size, sha in rows(b, "#filetable tr.file", "[r.dataset.path, +r.cells[1].dataset.v, r.cells[2].textContent]"):
            seen[p] = (size, sha)
    check(set(seen) == set(files), "files shown %s, ls --json %s" % (sorted(seen), sorted(files)))
    for p, (size, sha) in seen.items():
        check(size == files[p]["size"] and sha == files[p]["sha256"], "%s: %s vs %s" % (p, (size, sha), files[p]))
    revs = rows(b, "#revtable tbody tr", "r.dataset.commit")
    check(revs == [r["commit"] for r in lsm["revisions"]], "revisions %s" % revs)
    check(b.load(origin + "/ui/repo/model/" + MODEL) == 200, "repo page")
    cmd = b.eval("document.getElementById('cmd-hf').textContent")
    check(cmd == "HF_ENDPOINT=%s hf download %s" % (origin, MODEL), "hf command %r" % cmd)
    py = b.eval("document.getElementById('cmd-py').textContent")
    check('os.environ["HF_ENDPOINT"] = "%s"' % origin in py and 'snapshot_download("%s", repo_type="model")' % MODEL in py,
          "python lines %r" % py)
    pull = b.eval("document.getElementById('cmd-pull').textContent")
    check(pull == "hubmirror pull %s --endpoint %s" % (MODEL, origin), "pull command %r" % pull)
    check(b.eval("document.getElementById('cmd-sync').textContent").endswith("\n" + MODEL), "sync line")
    check(b.eval("document.getElementById('served').dataset.v") == "3", "files served of the repo")
    check(b.eval("document.querySelectorAll('button.copy').length") == 4, "copy buttons (JS)")
    charts_drawn(b, "repo page")
    # the commands work: huggingface_hub's path is covered by test_serve_interop; a pull through them here
    r = t.hm("pull", MODEL, "--endpoint", origin, "-q", store=os.path.join(t.tmp, "s2"), endpoint=False)
    check(r.rc == 0, "the page's pull command: %r" % r)
    wait_served(t, 4 + len(files))
    check(b.load(origin + "/ui/repo/dataset/" + DATASET) == 200, "dataset page")
    check(b.eval("document.getElementById('cmd-hf').textContent").endswith("--repo-type dataset"), "dataset command")
    check(b.load(origin + "/ui/repo/model/no-org/no-such") == 404, "unknown repo page")

    # ---- statistics ----
    stats10 = t.ok("stats", "--json").json()
    check(b.load(origin + "/ui/stats") == 200, "stats page")
    check_clean(b, origin, "stats page")
    ov = stats10["overall"]
    for k, v in (("o-count", ov["count"]), ("o-bytes", ov["bytes"]), ("o-hits", ov["hits"]),
                 ("o-misses", ov["misses"]), ("o-failures", ov["failures"])):
        check(int(b.eval("document.getElementById('%s').dataset.v" % k)) == v, "%s: expected %s" % (k, v))
    for table, key in (("by_repo", lambda e: "%s:%s" % (e["repo_type"], e["repo"])),
                       ("by_file", lambda e: "%s:%s" % (e["repo_type"], e["repo"])),
                       ("by_day", lambda e: e["day"]), ("by_endpoint", lambda e: e["endpoint"])):
        got = rows(b, "#%s tbody tr[data-key]" % table, "[r.dataset.key, r.dataset.path || null,"
                   " +r.querySelector('td.num').dataset.v, +r.querySelectorAll('td.num')[1].dataset.v]")
        exp = [[key(e), e.get("path"), e["count"], e["bytes"]] for e in stats10[table]]
        check(sorted(map(str, got)) == sorted(map(str, exp)), "%s: page %s, stats --json %s" % (table, got, exp))
    res = charts_drawn(b, "stats page")
    check(len(res) == 5, "five charts: %s" % res)
    check_screenshot(b.screenshot(os.path.join(shots, "stats-desktop.png"), SHOT_SCALE), "stats desktop")
    check(b.load(origin + "/ui/stats?since=2000-01-01&until=2000-01-02") == 200, "a range with nothing")
    check(b.eval("document.getElementById('o-count').dataset.v") == "0", "empty range count")
    charts_drawn(b, "empty range")
    check(b.load(origin + "/ui/stats?since=yesterdayish") == 400, "a bad date is a 400")
    check("since" in b.eval("document.getElementById('error').textContent"), "the error names the field")

    # ---- activity ----
    check(b.load(origin + "/ui/activity?refresh=0") == 200, "activity page")
    check_clean(b, origin, "activity")
    reqs = rows(b, "#requests tbody tr", "r.cells[2].textContent")
    check("GET " + HOSTILE_URL in reqs, "the hostile request shown literally: %s" % reqs[:5])
    check(any(r.startswith("GET /%s/resolve/main/config.json" % MODEL) for r in reqs), "file requests listed")
    check(not any("/ui/" in r for r in reqs), "page views are not listed: %s" % reqs)

    # ---- phone width ----
    b.viewport(390, 844, mobile=True)
    for page, name in (("/", "home"), ("/ui/stats", "stats"), ("/ui/repo/model/" + MODEL, "repo")):
        check(b.load(origin + page) == 200, "phone %s" % name)
        check_clean(b, origin, "phone " + name)
        sw = b.eval("document.documentElement.scrollWidth")
        check(sw <= 392, "phone %s: the page is %dpx wide (tables must scroll in their box)" % (name, sw))
        check_screenshot(b.screenshot(os.path.join(shots, "%s-phone.png" % name), SHOT_SCALE), "phone " + name)
    b.stop()
    if os.environ.get("HM_UI_SHOTS"):  # README screenshots: HM_UI_SHOTS=DIR
        for f in os.listdir(shots):
            os.replace(os.path.join(shots, f), os.path.join(os.environ["HM_UI_SHOTS"], f))


def cookie_of(r):
    sc = r.h("Set-Cookie") or ""
    return sc.split(";")[0], sc


@serving(timeout=90)
def test_ui_sign_in_allow_and_no_ui(t):
    sl.prefill(t)
    tf = os.path.join(t.tmp, "tokens")
    with open(tf, "w") as fh:
        fh.write("# lab\ns3cret-token\n")
    srv = Server(t, "--token-file", tf, "--allow", "demo-org/*")
    pages = ("/", "/ui", "/ui/stats", "/ui/activity", "/ui/chart.svg?k=days", "/ui/repo/model/" + MODEL,
             "/ui/stats?repo=" + MODEL)
    for p in pages:
        r = srv.get(p)
        check(r.status == 401, "%s without a token: %r" % (p, r))
        check(b'name="token"' in r.body and MODEL.encode() not in r.body, "%s: a login form and nothing else" % p)
    check(srv.get("/ui/app.css").status == 200, "the stylesheet needs no token")
    for tok in ("wrong", "", "s3cret-token\nx"):
        r = srv.post_form("/ui/login", {"token": tok})
        check(r.status == 401 and not r.h("Set-Cookie"), "login with %r: %r" % (tok, r))
    r = srv.post_form("/ui/login", {"token": "s3cret-token"})
    check(r.status == 303 and r.h("Location") == "/", "login: %r" % r)
    cookie, raw = cookie_of(r)
    check("HttpOnly" in raw and "SameSite=Strict" in raw and "s3cret" not in raw, "cookie %r" % raw)
    for p in pages:
        r = srv.get(p, headers={"Cookie": cookie})
        check(r.status == 200, "%s with the cookie: %r" % (p, r))
        r2 = srv.get(p, token="s3cret-token")
        check(r2.status == 200, "%s with the bearer token: %r" % (p, r2))
        check(OTHER.encode() not in r2.body, "%s: --allow hides %s" % (p, OTHER))
    home = srv.get("/", headers={"Cookie": cookie})
    check(b"Sign out" in home.body and MODEL.encode() in home.body and DATASET.encode() in home.body, "home")
    check(srv.get("/", headers={"Cookie": "hm_ui=77726f6e67"}).status == 401, "a cookie with a wrong token")
    check(srv.get("/api/models/" + MODEL, headers={"Cookie": cookie}).status == 401, "the cookie does not open the API")
    check(srv.get("/ui/repo/model/" + OTHER, token="s3cret-token").status == 404, "--allow hides the repo page")
    r = srv.get("/ui/stats?repo=" + OTHER, token="s3cret-token")
    check(r.status == 400 and OTHER.encode() in r.body, "--allow: stats of a hidden repo: %r" % r)
    r = srv.req("POST", "/ui/logout", headers={"Cookie": cookie}, body=b"")
    check(r.status == 303 and "Max-Age=0" in (r.h("Set-Cookie") or ""), "logout: %r" % r)
    # a path of the Hub API under /ui is the API's: the file of a repo "ui/x"
    r = srv.get("/ui/x/resolve/main/f.txt", token="s3cret-token")
    check(r.status == 404 and "json" in (r.h("Content-Type") or ""), "/ui/x/resolve/...: the API's answer: %r" % r)
    # a hostile Host header never reaches the page
    raw = srv.raw(("GET /ui/repo/model/%s HTTP/1.1\r\nHost: x\"><script>alert(1)</script>\r\n"
                   "Authorization: Bearer s3cret-token\r\nConnection: close\r\n\r\n" % MODEL).encode())
    check(raw.startswith(b"HTTP/1.1 200") and b"<script>alert" not in raw and b"HF_ENDPOINT=http://HOST:PORT" in raw,
          "hostile Host header: %r" % raw[:300])
    srv.stop()

    srv = Server(t, "--no-ui")
    for p in ("/", "/ui/stats", "/ui/app.css"):
        r = srv.get(p)
        check(r.status == 404 and "json" in (r.h("Content-Type") or ""), "--no-ui %s: %r" % (p, r))
    check(srv.get("/api/models/" + MODEL).status == 200, "--no-ui: the API still answers")


@serving(timeout=60)
def test_ui_activity_shows_pull_through_in_flight(t):
    """A pull-through stalled half way shows on the activity page with its
    progress; once done, it is gone and the request is in the list."""
    size = 2 * 1000 * 1000
    big = "demo-org/big"
    emu = t.emu([{"type": "model", "id": big,
                  "commits": [{"files": {"slow.bin": {"random": size, "seed": 4}}, "refs": ["main"]}]}])
    emu.faults([{"match": "slow.bin", "kind": "stall", "after": size // 2, "seconds": 4, "times": -1}])
    srv = Server(t, "--upstream", emu.url)
    c = srv.conn(30)
    c.request("GET", "/%s/resolve/main/slow.bin" % big)
    r = c.getresponse()
    check(r.status == 200, "status %d" % r.status)
    first = r.read1(65536)
    check(first, "first bytes")
    page = srv.get("/ui/activity?refresh=0")
    check(page.status == 200, "activity: %r" % page)
    m = re.search(rb'<table id="pulls">.*?</table>', page.body, re.S)
    check(m and big.encode() in m.group(0) and b"slow.bin" in m.group(0), "pull-through row: %r" % page.body[-3000:])
    prog = re.search(rb'<progress max="(\d+)" value="(\d+)">', m.group(0))
    check(prog and int(prog.group(1)) == size and 0 < int(prog.group(2)) <= size,
          "progress of the pull-through: %r" % m.group(0))
    check(b'id="npull" data-v="1"' in page.body, "one pull-through in flight")
    rest = r.read()
    c.close()
    check(len(first) + len(rest) == size, "the whole file")
    deadline = time.time() + 20
    while True:
        page = srv.get("/ui/activity?refresh=0")
        # the request is listed when the server has finished it, which may be
        # a moment after the client read its last byte: wait for both
        done = (b'id="npull" data-v="0"' in page.body and
                ("GET /%s/resolve/main/slow.bin" % big).encode() in page.body)
        if done or time.time() > deadline:
            break
        time.sleep(0.1)
    check(b'id="npull" data-v="0"' in page.body, "the pull-through is gone once done")
    check(("GET /%s/resolve/main/slow.bin" % big).encode() in page.body, "the request is listed")
    check(b"miss" in page.body, "as a cache miss")
