"""test_stats.py - `hubmirror stats` (every breakdown against hand-computed values
and against an independent computation over 50,000 rows, filters, --top, text,
--csv, usage errors, the SVG chart rendered in headless Chromium) and
`hubmirror du`."""

import csv
import datetime
import io
import json
import os
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib

import lib
from lib import check, SAMPLE_REPO

DAY = 86400
D0 = 19000 * DAY  # 2022-01-08

# (repo_type, repo, path, bytes, seconds, retries, result, endpoint, started_at)
PULLS = [
    ("model", "org/a", "w.bin", 1000, 1.0, 1, "ok", "hub.example", D0 + 10),
    ("model", "org/a", "w.bin", 3000, 1.0, 0, "ok", "cdn.example", D0 + 100),
    ("model", "org/a", "x.bin", 500, 0.5, 2, "failed", "hub.example", D0 + DAY + 5),
    ("dataset", "org/a", "d.csv", 0, 0.0, 0, "ok", "hub.example", D0 + DAY + 50),
    ("model", "org/b", "y.bin", 8000, 2.0, 0, "ok", "hub.example", D0 + 2 * DAY + 1),
]
# (kind, method, repo_type, repo, path, status, bytes, seconds, client, cache, started_at)
SERVED = [
    ("file", "GET", "model", "org/a", "w.bin", 200, 2000, 0.5, "10.0.0.1", "hit", D0 + 200),
    ("file", "GET", "model", "org/b", "y.bin", 200, 6000, 3.0, "10.0.0.2", "miss", D0 + 2 * DAY + 2),
    ("file", "GET", "model", "org/b", "z.bin", 404, 0, 0.1, "10.0.0.2", None, D0 + 2 * DAY + 3),
    ("file", "HEAD", "model", "org/a", "w.bin", 200, 0, 0.01, "10.0.0.1", "hit", D0 + 300),
    ("api", "GET", "model", "org/a", "/api/models/org/a", 200, 300, 0.01, "10.0.0.1", None, D0 + 400),
]


def new_store(t):
    """An empty store at the current schema (reading commands such as du
    refuse a directory that is not a store; rebuild-index makes one)."""
    t.ok("rebuild-index")


def insert(t, pulls=(), served=()):
    con = sqlite3.connect(os.path.join(t.store, "index.db"), timeout=30)
    with con:
        con.executemany(
            "INSERT INTO downloads(repo_type, repo, revision, path, size, bytes, seconds, connections,"
            " retries, result, error, endpoint, started_at) VALUES (?,?,'%s',?,?,?,?,4,?,?,?,?,?)" % ("c" * 40),
            [(p[0], p[1], p[2], p[3], p[3], p[4], p[5], p[6], "reset" if p[6] == "failed" else None, p[7], p[8])
             for p in pulls])
        con.executemany(
            "INSERT INTO served(kind, method, repo_type, repo, revision, path, status, bytes, seconds, client,"
            " cache, started_at) VALUES (?,?,?,?,'main',?,?,?,?,?,?,?)", list(served))
    con.close()


def stats_json(t, *args):
    return t.ok("stats", "--json", *args).json()


def same(a, b):
    return abs(a - b) <= 1e-9 * (abs(b) + 1)


def check_row(row, want, what):
    for k, v in want.items():
        got = row.get(k)
        ok = same(got, v) if isinstance(v, float) else got == v
        check(ok, "%s: %s is %r, expected %r (row %s)" % (what, k, got, v, row))


def test_stats_hand_computed(t):
    new_store(t)
    insert(t, PULLS, SERVED)
    j = stats_json(t, "--top", "0")
    # 5 pulls + 3 served file GETs; rates (bytes) 1000 (1000), 3000 (3000), 1000 (500), 4000 (8000),
    # 4000 (2000), 2000 (6000): weighted by bytes, half of the 20500 bytes moved at 3000 B/s or less
    check_row(j["overall"], dict(count=8, bytes=20500, retries=3, failures=2, hits=1, misses=1,
                                 median_rate=3000.0, p95_rate=4000.0), "overall")
    r = j["by_repo"]
    check([(x["repo_type"], x["repo"]) for x in r] == [("model", "org/b"), ("model", "org/a"), ("dataset", "org/a")],
          "by_repo order: %s" % r)
    check_row(r[0], dict(count=3, bytes=14000, retries=0, failures=1, hits=0, misses=1, median_rate=4000.0,
                         p95_rate=4000.0), "by_repo org/b")
    check_row(r[1], dict(count=4, bytes=6500, retries=3, failures=1, hits=1, misses=0, median_rate=3000.0,
                         p95_rate=4000.0), "by_repo org/a")
    check_row(r[2], dict(count=1, bytes=0, median_rate=0.0, p95_rate=0.0), "by_repo dataset org/a")
    f = j["by_file"]
    check([(x["repo"], x["path"]) for x in f] == [("org/b", "y.bin"), ("org/a", "w.bin"), ("org/a", "x.bin"),
                                                  ("org/a", "d.csv"), ("org/b", "z.bin")], "by_file order: %s" % f)
    check_row(f[1], dict(count=3, bytes=6000, retries=1, failures=0, hits=1, median_rate=3000.0, p95_rate=4000.0),
              "by_file w.bin")
    check_row(f[2], dict(count=1, bytes=500, retries=2, failures=1, median_rate=1000.0, p95_rate=1000.0),
              "by_file x.bin")
    check_row(f[4], dict(count=1, bytes=0, failures=1), "by_file z.bin (the 404)")
    d = j["by_day"]
    # --by day reads in date order
    check([x["day"] for x in d] == ["2022-01-08", "2022-01-09", "2022-01-10"], "by_day order: %s" % d)
    check_row(d[0], dict(count=3, bytes=6000, retries=1, hits=1, start=D0, median_rate=3000.0), "by_day 01-08")
    check_row(d[1], dict(count=2, bytes=500, retries=2, failures=1, median_rate=1000.0), "by_day 01-09")
    e = j["by_endpoint"]
    check([(x["source"], x["endpoint"]) for x in e] == [("pull", "hub.example"), ("serve", "10.0.0.2"),
                                                        ("pull", "cdn.example"), ("serve", "10.0.0.1")],
          "by_endpoint order: %s" % e)
    check_row(e[0], dict(count=4, bytes=9500, retries=3, failures=1, median_rate=4000.0, p95_rate=4000.0),
              "by_endpoint hub.example")
    check_row(e[1], dict(count=2, bytes=6000, failures=1, misses=1, median_rate=2000.0), "by_endpoint 10.0.0.2")
    # schema 2: no legacy duplicates of by_repo/overall
    check("total" not in j and "repos" not in j and j["schema"] == 2, "legacy keys: %s" % list(j))
    check_row(j["served"]["total"], dict(requests=5, files=4, bytes=8300, hits=2, misses=1, errors=1),
              "served total")

    # --top, --repo, --since/--until
    j = stats_json(t, "--top", "1")
    check(all(len(j[k]) == 1 for k in ("by_repo", "by_file", "by_day", "by_endpoint")), "--top 1: %s" % j)
    check(j["overall"]["count"] == 8, "--top changes the totals")
    j = stats_json(t, "--top", "0", "--repo", "org/b")
    check_row(j["overall"], dict(count=3, bytes=14000), "--repo org/b")
    check([x["repo"] for x in j["by_repo"]] == ["org/b"], "--repo org/b by_repo: %s" % j["by_repo"])
    for since, until in (("2022-01-09", "2022-01-09"), (str(D0 + DAY), str(D0 + 2 * DAY)),
                         ("2022-01-09T00:00:00Z", "2022-01-10T00:00:00Z"),
                         ("2022-01-09T02:00:00+02:00", "2022-01-09T23:59:59-00:00")):
        j = stats_json(t, "--since", since, "--until", until)
        check_row(j["overall"], dict(count=2, bytes=500, failures=1), "--since %s --until %s" % (since, until))
        check([x["day"] for x in j["by_day"]] == ["2022-01-09"], "by_day in range: %s" % j["by_day"])
    j = stats_json(t, "--since", "7d")
    check(j["overall"]["count"] == 0 and j["by_repo"] == [], "--since 7d shows old rows: %s" % j["overall"])


def test_stats_text_and_csv(t):
    new_store(t)
    # a path that CSV has to quote
    insert(t, PULLS + [("model", "org/c", 'a,"b".txt', 77, 1.0, 0, "ok", "hub.example", D0 + 7)], SERVED)
    r = t.ok("stats")
    lines = r.out.splitlines()
    check(lines[0] == "store: " + t.store, "the table does not name its store first: %r" % r)
    lines = lines[1:]
    check(lines[0].split()[:3] == ["REPO", "COUNT", "BYTES"], "table header: %r" % r)
    check(any(l.startswith("model:org/b ") for l in lines), "no model:org/b row: %r" % r)
    check(any(l.startswith("total ") for l in lines), "no total line: %r" % r)
    check("SERVED" in r.out, "no served section: %r" % r)
    # aligned: the columns of the header and the rows end at the same place
    head = lines[0]
    row = [l for l in lines if l.startswith("total ")][0]
    check(len(head) == len(row), "columns not aligned:\n%s\n%s" % (head, row))
    for by, key in (("file", "y.bin"), ("day", "2022-01-10"), ("endpoint", "hub.example"), ("repo", "org/b")):
        r = t.ok("stats", "--by", by)
        check(key in r.out and "total" in r.out, "--by %s: %r" % (by, r))
    r = t.ok("stats", "--by", "file", "--top", "2")
    check("more files" in r.out, "--top 2 does not say rows were left out: %r" % r)

    r = t.ok("stats", "--csv", "--by", "file", "--top", "0")
    check("\r\n" in r.out, "CSV lines must end in CRLF")
    rows = list(csv.reader(io.StringIO(r.out, newline="")))
    check(rows[0] == ["repo_type", "repo", "path", "count", "bytes", "seconds", "median_rate", "p95_rate",
                      "retries", "failures", "hits", "misses"], "CSV header: %s" % rows[0])
    by_path = {x[2]: x for x in rows[1:]}
    check('a,"b".txt' in by_path, "quoted path lost: %r" % r.out)
    check('"a,""b"".txt"' in r.out, "path not quoted as RFC 4180 says: %r" % r.out)
    check(by_path["y.bin"][3:5] == ["2", "14000"], "CSV y.bin: %s" % by_path["y.bin"])
    for by, head in (("repo", ["repo_type", "repo"]), ("day", ["day"]), ("endpoint", ["source", "endpoint"])):
        rows = list(csv.reader(io.StringIO(t.ok("stats", "--csv", "--by", by).out, newline="")))
        check(rows[0][:len(head)] == head and rows[0][len(head)] == "count", "CSV --by %s header %s" % (by, rows[0]))
        check(all(len(x) == len(rows[0]) for x in rows), "CSV --by %s: ragged rows" % by)


def test_stats_usage_errors(t):
    new_store(t)
    for args in (["--since", "yesterday"], ["--until", "2024-13-01"], ["--since", "5x"], ["--by", "color"],
                 ["--top", "-1"], ["--top", "many"], ["--csv", "--json"], ["extra"],
                 ["--since", "2024-02-01", "--until", "2024-01-01"]):
        r = t.hm("stats", *args)
        check(r.rc == 2, "expected exit 2 for stats %s: %r" % (args, r))
        check(r.err.strip(), "no message for stats %s" % args)
    t.fails("du", "--top", "x", rc=2)
    t.fails("du", "extra", rc=2)


def pct(v):
    """median and p95 of [(rate, bytes)] weighted by bytes, as hubmirror
    defines them: the smallest rate at or below which half (95%) of the bytes
    moved."""
    if not v:
        return 0.0, 0.0
    v = sorted(v)
    total = float(sum(b for _, b in v))

    def at(q):
        cum = 0
        for r, b in v:
            cum += b
            if cum >= q * total:
                return r
        return v[-1][0]
    return at(0.5), at(0.95)


def expected(pulls, served):
    """{breakdown: {key: row}} computed independently of hubmirror."""
    out = {"repo": {}, "file": {}, "day": {}, "endpoint": {}, "total": {}}
    xfers = []
    for (typ, repo, path, b, s, retries, result, end, at) in pulls:
        xfers.append((typ, repo, path, b, s, retries, result == "failed", 0, 0, ("pull", end), at))
    for (kind, method, typ, repo, path, status, b, s, client, cache, at) in served:
        if kind == "file" and method == "GET":
            xfers.append((typ, repo, path, b, s, 0, status >= 400, cache == "hit", cache == "miss",
                          ("serve", client), at))
    for (typ, repo, path, b, s, retries, failed, hit, miss, peer, at) in xfers:
        day = datetime.datetime.fromtimestamp(at // DAY * DAY, datetime.timezone.utc).strftime("%Y-%m-%d")
        keys = {"repo": (typ, repo), "file": (typ, repo, path), "day": day, "endpoint": peer, "total": None}
        for k, key in keys.items():
            r = out[k].setdefault(key, dict(count=0, bytes=0, retries=0, failures=0, hits=0, misses=0, rates=[]))
            r["count"] += 1
            r["bytes"] += b
            r["retries"] += retries
            r["failures"] += int(failed)
            r["hits"] += int(hit)
            r["misses"] += int(miss)
            if b > 0 and s > 0:
                r["rates"].append((b / s, b))
    for rows in out.values():
        for r in rows.values():
            r["median_rate"], r["p95_rate"] = pct(r.pop("rates"))
    return out


def json_key(by, x):
    return {"repo": lambda: (x["repo_type"], x["repo"]), "file": lambda: (x["repo_type"], x["repo"], x["path"]),
            "day": lambda: x["day"], "endpoint": lambda: (x["source"], x["endpoint"])}[by]()


def test_stats_50k_rows_every_breakdown(t):
    rnd = random.Random(7)
    repos = [("model" if i % 5 else "dataset", "org%d/r%d" % (i % 3, i)) for i in range(40)]
    files = ["f%02d.bin" % i for i in range(30)]
    ends = ["hub.example", "cdn.example", "xet.example"]
    pulls, served = [], []
    for i in range(50000):
        typ, repo = rnd.choice(repos)
        b = rnd.choice((0, rnd.randrange(1, 1 << 30)))
        s = rnd.choice((0.0, rnd.uniform(0.001, 60)))
        pulls.append((typ, repo, rnd.choice(files), b, s, rnd.choice((0, 0, 1, 4)),
                      "failed" if rnd.random() < 0.03 else "ok", rnd.choice(ends), D0 + rnd.randrange(60 * DAY)))
    for i in range(5000):
        typ, repo = rnd.choice(repos)
        served.append((rnd.choice(("file", "file", "api")), rnd.choice(("GET", "GET", "HEAD")), typ, repo,
                       rnd.choice(files), rnd.choice((200, 206, 404)), rnd.randrange(1 << 28),
                       rnd.uniform(0.0, 5), "10.1.0.%d" % rnd.randrange(20), rnd.choice(("hit", "miss", None)),
                       D0 + rnd.randrange(60 * DAY)))
    new_store(t)
    insert(t, pulls, served)
    want = expected(pulls, served)
    j = stats_json(t, "--top", "0")
    check_row(j["overall"], want["total"][None], "overall")
    for by in ("repo", "file", "day", "endpoint"):
        rows = j["by_" + by]
        check(len(rows) == len(want[by]), "by_%s: %d rows, expected %d" % (by, len(rows), len(want[by])))
        for x in rows:
            k = json_key(by, x)
            check(k in want[by], "by_%s: unexpected key %s" % (by, k))
            check_row(x, want[by][k], "by_%s %s" % (by, k))
        if by == "day":
            check([x["day"] for x in rows] == sorted(x["day"] for x in rows), "by_day not in date order")
        else:
            check([x["bytes"] for x in rows] == sorted((x["bytes"] for x in rows), reverse=True),
                  "by_%s not ordered by bytes" % by)
    # --top N keeps the N largest (days then read in date order)
    j = stats_json(t, "--top", "5")
    for by in ("repo", "file", "day", "endpoint"):
        top = sorted(want[by].values(), key=lambda r: -r["bytes"])[:5]
        got = [x["bytes"] for x in j["by_" + by]]
        if by == "day":
            got = sorted(got, reverse=True)
        check(got == [r["bytes"] for r in top], "--top 5 by_%s" % by)
    # a repo and a time range
    typ, repo = repos[3]
    since, until = D0 + 10 * DAY, D0 + 20 * DAY
    w = expected([p for p in pulls if p[1] == repo and since <= p[8] < until],
                 [s for s in served if s[3] == repo and since <= s[10] < until])
    j = stats_json(t, "--top", "0", "--repo", "%s:%s" % (typ, repo), "--since", str(since), "--until", str(until))
    check_row(j["overall"], w["total"][None], "overall of %s in range" % repo)
    for x in j["by_day"]:
        check_row(x, w["day"][x["day"]], "by_day %s of %s" % (x["day"], repo))
    check(len(j["by_day"]) == len(w["day"]) == 10, "days in range: %d" % len(j["by_day"]))


test_stats_50k_rows_every_breakdown.timeout = 180


def check_report(j, want, what):
    """Every row of every breakdown of `stats --json --top 0` against expected()."""
    check_row(j["overall"], want["total"][None], "%s: overall" % what)
    for by in ("repo", "file", "day", "endpoint"):
        rows = j["by_" + by]
        check(len(rows) == len(want[by]), "%s: by_%s: %d rows, expected %d" % (what, by, len(rows), len(want[by])))
        for x in rows:
            k = json_key(by, x)
            check(k in want[by], "%s: by_%s: unexpected key %s" % (what, by, k))
            check_row(x, want[by][k], "%s: by_%s %s" % (what, by, k))


def test_stats_cache_follows_the_tables(t):
    """The statistics cache (schema v6) against the rows as they are, after
    a query packed them and the tables then changed under it."""
    rnd = random.Random(11)
    repos = [("model" if i % 4 else "dataset", "org/r%d" % i) for i in range(12)]

    def pull():
        return (*rnd.choice(repos), "f%d.bin" % rnd.randrange(300), rnd.choice((0, rnd.randrange(1, 1 << 30))),
                rnd.choice((0.0, rnd.uniform(0.01, 30))), rnd.choice((0, 2)),
                "failed" if rnd.random() < 0.05 else "ok", rnd.choice(("a.example", "b.example")),
                D0 + rnd.randrange(40 * DAY))

    def serve():
        return (rnd.choice(("file", "api")), rnd.choice(("GET", "HEAD")), *rnd.choice(repos),
                "f%d.bin" % rnd.randrange(300), rnd.choice((200, 404)), rnd.randrange(1 << 26),
                rnd.uniform(0.01, 3), "10.2.0.%d" % rnd.randrange(5), rnd.choice(("hit", "miss", None)),
                D0 + rnd.randrange(40 * DAY))

    # ids follow the order of insertion in a fresh store
    pulls = {i + 1: pull() for i in range(12000)}
    served = {i + 1: serve() for i in range(6000)}
    new_store(t)
    insert(t, pulls.values(), served.values())
    check_report(stats_json(t, "--top", "0"), expected(pulls.values(), served.values()), "fresh")
    db = os.path.join(t.store, "index.db")
    con = sqlite3.connect(db, timeout=30)
    check(con.execute("SELECT count(*) FROM stats_chunks WHERE data IS NOT NULL").fetchone()[0] == 3,
          "the first stats did not pack the rows")

    # rows added (more than a chunk), deleted, changed, after the query
    more = {12001 + i: pull() for i in range(5000)}
    insert(t, more.values())
    pulls.update(more)
    with con:
        con.execute("DELETE FROM downloads WHERE id BETWEEN 100 AND 199")
        con.execute("UPDATE downloads SET bytes = 777777, seconds = 0.25 WHERE id = 9000")
        con.execute("UPDATE served SET status = 503, cache = 'miss' WHERE id = 4500")
    for i in range(100, 200):
        del pulls[i]
    p = pulls[9000]
    pulls[9000] = p[:3] + (777777, 0.25) + p[5:]
    v = served[4500]
    served[4500] = v[:5] + (503,) + v[6:9] + ("miss",) + v[10:]
    check_report(stats_json(t, "--top", "0"), expected(pulls.values(), served.values()), "after changes")
    # and a few rows more: fewer than a chunk, read from the table
    few = {17001 + i: pull() for i in range(30)}
    insert(t, few.values())
    pulls.update(few)
    check_report(stats_json(t, "--top", "0"), expected(pulls.values(), served.values()), "after 30 rows")
    since, until = D0 + 5 * DAY, D0 + 9 * DAY
    j = stats_json(t, "--top", "0", "--since", str(since), "--until", str(until))
    check_report(j, expected([x for x in pulls.values() if since <= x[8] < until],
                             [x for x in served.values() if since <= x[10] < until]), "in a range")
    con.close()


test_stats_cache_follows_the_tables.timeout = 180


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    # make check installs it (mk/deps.sh test); when run alone, try the same
    subprocess.run(["sh", os.path.join(lib.ROOT, "mk", "deps.sh"), "test"], capture_output=True, timeout=900)
    p = shutil.which("chromium")
    check(p, "chromium is not installed and could not be installed (no network or no root?):"
             " run 'sudo apt-get install -y chromium' to render the chart in this test")
    return p


def png_pixels(path):
    """(width, height, rows of RGB(A) tuples' bytes, channels) of an 8-bit PNG (stdlib only)."""
    data = lib.read(path)
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "%s is not a PNG" % path)
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    check(depth == 8 and color in (2, 6), "PNG depth %d color type %d" % (depth, color))
    ch = 3 if color == 2 else 4
    raw, stride, prev, rows = zlib.decompress(idat), w * ch, bytearray(w * ch), []
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows, ch


def test_stats_chart_svg_renders(t):
    new_store(t)
    rnd = random.Random(3)
    pulls = [("model", "org/a", "f%d" % (i % 9), rnd.randrange(1, 1 << 27), rnd.uniform(0.1, 5), 0, "ok",
              "hub.example", D0 + (i % 30) * DAY + i) for i in range(600) if (i % 30) not in (4, 5)]
    insert(t, pulls, SERVED)
    svg = os.path.join(t.tmp, "chart.svg")
    t.ok("stats", "--chart", svg, "--repo", "org/a")
    root = ET.parse(svg).getroot()  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    check(root.tag == ns + "svg", "root element %s" % root.tag)
    text = lib.read(svg).decode()
    check("<script" not in text.lower() and "href" not in text and "url(" not in text,
          "the chart must be self-contained, no scripts or external references")
    bars = [r for r in root.iter(ns + "rect") if r.find(ns + "title") is not None]
    check(len(bars) == 28, "%d bars, expected one per day with transfers (28)" % len(bars))
    lines = list(root.iter(ns + "polyline"))
    check(len(lines) == 1 and len(lines[0].get("points").split()) == 28, "throughput line: %s" %
          [l.attrib for l in lines])
    texts = " ".join("".join(x.itertext()) for x in root.iter(ns + "text"))
    for want in ("hubmirror", "Bytes per day", "Throughput", "2022-01-08", "org/a", "MiB/s", "day (UTC)"):
        check(want in texts, "chart text lacks %r: %s" % (want, texts[:500]))

    # an empty range still gives a valid chart
    empty = os.path.join(t.tmp, "empty.svg")
    t.ok("stats", "--chart", empty, "--since", "1d")
    ET.parse(empty)
    t.fails("stats", "--chart", os.path.join(t.tmp, "no", "such", "dir", "c.svg"), words=["cannot write"])

    chrome = chromium_binary()
    png = os.path.join(t.tmp, "out.png")
    prof = os.path.join(t.tmp, "chromium-profile")
    p = subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--user-data-dir=" + prof, "--screenshot=" + png, "--window-size=900,700",
                        "file://" + svg], capture_output=True, timeout=120, cwd=t.tmp)
    check(os.path.exists(png) and os.path.getsize(png) > 5000,
          "chromium made no screenshot (rc %d): %s" % (p.returncode, p.stderr.decode(errors="replace")[-1500:]))
    w, h, rows, ch = png_pixels(png)
    check((w, h) == (900, 700), "screenshot is %dx%d" % (w, h))
    white = blue = red = 0
    for row in rows:
        for x in range(0, w * ch, ch):
            r, g, b = row[x], row[x + 1], row[x + 2]
            if r > 245 and g > 245 and b > 245:
                white += 1
            elif abs(r - 0x3b) < 30 and abs(g - 0x7d) < 30 and abs(b - 0xd8) < 30:
                blue += 1
            elif abs(r - 0xd8) < 30 and abs(g - 0x55) < 30 and abs(b - 0x3b) < 30:
                red += 1
    check(white < w * h * 0.97, "the screenshot is blank (%d of %d pixels white)" % (white, w * h))
    check(blue > 2000, "no bars drawn (%d bar-coloured pixels)" % blue)
    check(red > 200, "no throughput line drawn (%d line-coloured pixels)" % red)


test_stats_chart_svg_renders.timeout = 300


def test_stats_after_pull(t):
    emu = t.emu()
    t.ok("pull", SAMPLE_REPO)
    j = stats_json(t, "--top", "0")
    src = lib.sample_files()
    check(j["overall"]["count"] == len(src) and j["overall"]["bytes"] == sum(len(d) for d in src.values()),
          "overall after a pull: %s" % j["overall"])
    check(sorted(x["path"] for x in j["by_file"]) == sorted(src), "by_file: %s" % [x["path"] for x in j["by_file"]])
    hosts = {x["endpoint"] for x in j["by_endpoint"]}
    check(all(x["source"] == "pull" for x in j["by_endpoint"]) and hosts and
          all("127.0.0." in h for h in hosts), "by_endpoint: %s" % j["by_endpoint"])
    # the host that sent the bytes: LFS files come from the CDN (127.0.0.2), not the hub
    cdn = emu.cdn.split("//")[1].split(":")[0]
    lfs = sum(len(d) for p, d in src.items() if p in lib.SAMPLE_LFS)
    by_host = {x["endpoint"]: x["bytes"] for x in j["by_endpoint"]}
    check(any(cdn in h and b == lfs for h, b in by_host.items()),
          "the CDN (%s) should have sent the %d LFS bytes: %s" % (cdn, lfs, by_host))
    check(j["overall"]["median_rate"] > 0 and j["overall"]["p95_rate"] >= j["overall"]["median_rate"],
          "rates: %s" % j["overall"])
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    check([x["day"] for x in j["by_day"]] == [today], "by_day: %s" % j["by_day"])


def test_du(t):
    src = lib.sample_files()
    other = {"type": "model", "id": "org/other", "commits": [{"files": {
        "README.md": {"b64": __import__("base64").b64encode(src["README.md"]).decode()},
        "only.txt": "only here\n"}}]}
    t.emu([lib.sample_repo(), other])
    t.ok("pull", SAMPLE_REPO)
    t.ok("pull", "org/other")
    os.makedirs(os.path.join(t.store, "tmp"), exist_ok=True)
    with open(os.path.join(t.store, "tmp", "f" * 64 + ".part"), "wb") as fh:
        fh.write(b"x" * 1234)
    j = t.ok("du", "--json").json()
    blobs, _ = lib.store_blobs(t.store)
    disk = sum(os.path.getsize(p) for p in blobs.values())
    logical = sum(len(d) for d in src.values()) + len(src["README.md"]) + len(b"only here\n")
    unique = sum(len(d) for d in {lib.sha256_bytes(d): d for d in list(src.values()) + [b"only here\n"]}.values())
    check_row(j, dict(disk=disk, blobs=len(blobs), logical=logical, unique=unique, saved=logical - unique,
                      partial=1234, partials=1, repos=2), "du")
    check(j["saved"] == len(src["README.md"]), "dedup saves README.md once: %s" % j)
    check([x["repo"] for x in j["by_unique"]] == [SAMPLE_REPO, "org/other"], "by_unique: %s" % j["by_unique"])
    check(j["by_logical"][0]["logical"] == sum(len(d) for d in src.values()), "by_logical: %s" % j["by_logical"])
    j = t.ok("du", "--json", "--top", "1").json()
    check(len(j["by_unique"]) == 1 and len(j["by_logical"]) == 1 and j["repos"] == 2, "du --top 1: %s" % j)
    r = t.ok("du")
    for want in ("on disk", "dedup saves", "partial", SAMPLE_REPO, "LARGEST REPOS"):
        check(want in r.out, "du output lacks %r: %r" % (want, r))
    r = t.ok("du", "--help", store=False)
    check("--top" in r.out, "du --help: %r" % r)


def test_stats_chart_shows_a_slowdown(t):
    """A planted 3x slowdown of the large transfers (while many small files stay
    fast) shows in the chart's throughput line; MiB/s as in the tables; date
    ticks evenly spaced."""
    new_store(t)
    pulls = []
    mib = 1 << 20
    for day in range(42):
        rate = 30 * mib if day < 21 else 10 * mib
        when = D0 + day * DAY + 3600
        if day % 5 == 3:  # some days have no transfers: ticks stay evenly spaced
            continue
        pulls.append(("model", "org/big", "model-%02d.safetensors" % day, 600 * mib, 600 * mib / rate, 0, "ok",
                      "cdn.example", when))
        for k in range(50):  # many small, fast files
            pulls.append(("model", "org/big", "small-%d.json" % k, 2000, 0.0001, 0, "ok", "hub.example", when + k))
    insert(t, pulls)
    svg = os.path.join(t.tmp, "chart.svg")
    t.ok("stats", "--chart", svg)
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    texts = [e.text or "" for e in root.iter(ns + "text")]
    check(any("MiB/s" in x for x in texts) and not any("MB/s" in x for x in texts), "units: %s" % texts)
    line = [e for e in root.iter(ns + "polyline")][0]
    pts = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    ys = [y for _, y in pts]
    bottom = max(float(e.get("y")) + float(e.get("height")) for e in root.iter(ns + "rect")
                 if e.get("fill") == "#fafafa")
    before = sum(bottom - y for y in ys[:len(ys) // 3]) / (len(ys) // 3)
    after = sum(bottom - y for y in ys[-len(ys) // 3:]) / (len(ys) // 3)
    check(2.4 < before / after < 3.6, "the 3x slowdown is not visible: heights %.1f then %.1f" % (before, after))
    ticks = sorted({float(e.get("x")) for e in root.iter(ns + "text")
                    if re.fullmatch(r"\d{4}-\d\d-\d\d", e.text or "")})
    gaps = {round(b - a, 1) for a, b in zip(ticks, ticks[1:])}
    check(len(ticks) >= 4 and len({round(g) for g in gaps}) == 1, "date ticks not evenly spaced: %s" % ticks)


def test_stats_median_weighted_by_bytes(t):
    """A pull of one large file at 15 MiB/s and a hundred small files whose rate
    is mostly latency (18 KiB/s) has a median of 15 MiB/s, not 18 KiB/s."""
    new_store(t)
    mib = 1 << 20
    pulls = [("model", "org/big", "model.safetensors", 900 * mib, 60.0, 0, "ok", "cdn.example", D0 + 5)]
    pulls += [("model", "org/big", "small-%03d.json" % i, 1800, 0.1, 0, "ok", "hub.example", D0 + 5)
              for i in range(100)]
    insert(t, pulls)
    o = stats_json(t)["overall"]
    check(same(o["median_rate"], 15.0 * mib) and same(o["p95_rate"], 15.0 * mib),
          "median/p95 should be the large file's 15 MiB/s: %s" % o)
    # and the small files alone still show theirs
    o = stats_json(t, "--by", "file", "--top", "0")["by_file"]
    small = [x for x in o if x["path"].startswith("small-")]
    check(small and all(same(x["median_rate"], 18000.0) for x in small), "small files: %s" % small[:2])


def test_stats_seconds_are_wall_time(t):
    """Eight connections for ten seconds are ten seconds: a row's seconds are
    the time during which at least one of its transfers ran, and its rate is
    its bytes over that time."""
    new_store(t)
    mib = 1 << 20
    # a pull of 8 files in parallel (each 10 s, the last starting 2 s later), then one alone 100 s on
    pulls = [("model", "org/par", "f%d.bin" % i, 10 * mib, 10.0, 0, "ok", "hub.example", D0 + 50 + (2 if i == 7 else 0))
             for i in range(8)]
    pulls.append(("model", "org/par", "late.bin", 5 * mib, 5.0, 0, "ok", "hub.example", D0 + 200))
    pulls.append(("model", "org/other", "x.bin", 1 * mib, 4.0, 0, "ok", "hub.example", D0 + 55))
    insert(t, pulls)
    j = stats_json(t, "--top", "0")
    row = [x for x in j["by_repo"] if x["repo"] == "org/par"][0]
    check(same(row["seconds"], 17.0), "org/par: 12 s of the parallel pull + 5 s, got %r" % row["seconds"])
    check(same(row["rate"], 85.0 * mib / 17.0), "org/par rate: %r" % row["rate"])
    # the total: org/other's transfer ran inside the parallel pull's time
    check(same(j["overall"]["seconds"], 17.0), "overall seconds: %r" % j["overall"]["seconds"])
    f = [x for x in j["by_file"] if x["path"] == "f0.bin"][0]
    check(same(f["seconds"], 10.0), "one file's seconds: %r" % f["seconds"])
