"""test_auth.py - gated and private repos, where the token comes from, where
it must never go (the CDN, stdout/stderr, the store), and repo/endpoint errors."""

import os
import socket
import time

import lib
from lib import check

GATED = "org/gated-llama"
PRIVATE = "org/private-llama"
GOOD = "hf_GoodSecretToken0123456789abcdef"
OTHER = "hf_OtherUserToken9876543210fedcba"


def gated_emu(t, **extra):
    repos = [lib.sample_repo(GATED, gated="manual", tokens=[GOOD]),
             lib.sample_repo(PRIVATE, private=True, tokens=[GOOD])]
    return t.emu(repos, tokens=[OTHER], **extra)


def no_secret_anywhere(t, r, secret=GOOD):
    check(secret not in r.out and secret not in r.err, "the token was printed: %r" % r)
    needle = secret.encode()
    for d, _, names in os.walk(t.store):
        for n in names:
            p = os.path.join(d, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                check(needle not in fh.read(), "the token is stored in %s" % p)


def token_use(emu, token=GOOD):
    """Checks every request the API host got for the gated repo carried the
    token and no CDN request carried any Authorization."""
    log = emu.log()
    cdn = [e for e in log if e["host"] == "cdn"]
    check(cdn, "no CDN request was made")
    leaked = [e["path"] for e in cdn if e["auth"]]
    check(not leaked, "Authorization sent to the CDN host: %s" % leaked[:3])
    api = [e for e in log if e["host"] == "api"]
    missing = [e["path"] for e in api if e.get("authorization") != "Bearer " + token]
    check(not missing, "API requests without 'Authorization: Bearer <token>': %s" % missing[:5])


def test_gated_without_token(t):
    emu = gated_emu(t)
    r = t.fails("pull", GATED, words=["gated"])
    check(not emu.file_gets() or all(e["status"] >= 400 for e in emu.file_gets()),
          "gated bytes served without a token")
    if os.path.exists(os.path.join(t.store, "index.db")):
        check(not t.db("SELECT * FROM files"), "files recorded for a failed pull")


def test_gated_with_token(t):
    # like S3, the CDN refuses a request that carries an Authorization header
    emu = gated_emu(t, extra={"cdn_reject_auth": True})
    r = t.ok("pull", GATED, "--json", "--token", GOOD)
    lib.check_pulled(t, emu, GATED, r.json(), lib.sample_files())
    token_use(emu)
    no_secret_anywhere(t, r)


def test_gated_token_not_allowed(t):
    emu = gated_emu(t)
    r = t.fails("pull", GATED, "--token", OTHER, words=["gated"])
    check(OTHER not in r.out + r.err, "the token was printed: %r" % r)


def test_token_from_hf_token(t):
    emu = gated_emu(t)
    r = t.ok("pull", GATED, "--json", env={"HF_TOKEN": GOOD})
    token_use(emu)
    no_secret_anywhere(t, r)


def test_token_from_token_path(t):
    emu = gated_emu(t)
    path = os.path.join(t.tmp, "secret-token")
    with open(path, "w") as fh:
        fh.write(GOOD + "\n")
    r = t.ok("pull", GATED, "--json", env={"HF_TOKEN_PATH": path})
    token_use(emu)
    no_secret_anywhere(t, r)


def test_token_from_hf_home(t):
    emu = gated_emu(t)
    with open(os.path.join(t.hf_home, "token"), "w") as fh:
        fh.write(GOOD + "\n")
    r = t.ok("pull", GATED, "--json")
    token_use(emu)
    no_secret_anywhere(t, r)


def test_token_precedence(t):
    emu = gated_emu(t)
    with open(os.path.join(t.hf_home, "token"), "w") as fh:
        fh.write(OTHER + "\n")
    # HF_TOKEN beats the token file
    t.ok("pull", GATED, env={"HF_TOKEN": GOOD})
    token_use(emu)
    # --token beats HF_TOKEN
    emu.reset_log()
    t.store = t.store + "-2"
    t.ok("pull", GATED, "--token", GOOD, env={"HF_TOKEN": OTHER})
    token_use(emu)


def test_no_token_sent_to_public_cdn(t):
    emu = t.emu(tokens=[GOOD])
    r = t.ok("pull", lib.SAMPLE_REPO, "--json", "--token", GOOD)
    cdn = [e for e in emu.log() if e["host"] == "cdn"]
    check(cdn and not any(e["auth"] for e in cdn), "Authorization sent to the CDN host")
    no_secret_anywhere(t, r)


def test_private_without_token_is_not_found(t):
    gated_emu(t)
    t.fails("pull", PRIVATE, words=["not found"])


def test_private_with_token(t):
    emu = gated_emu(t)
    r = t.ok("pull", PRIVATE, "--json", "--token", GOOD)
    lib.check_pulled(t, emu, PRIVATE, r.json(), lib.sample_files())
    token_use(emu)
    no_secret_anywhere(t, r)


def test_unknown_repo(t):
    t.emu()
    r = t.fails("pull", "org/does-not-exist", words=["not found"])
    check("org/does-not-exist" in r.err, "the error should name the repo: %r" % r)


def test_unknown_repo_as_dataset(t):
    t.emu()
    t.fails("pull", lib.SAMPLE_REPO, "--repo-type", "dataset", words=["not found"])


def test_unreachable_endpoint(t):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.time()
    r = t.fails("pull", lib.SAMPLE_REPO, endpoint="http://127.0.0.1:%d" % port,
                words=["unreachable", "cannot connect"])
    check(time.time() - t0 < 60, "took %.0fs to report a dead endpoint" % (time.time() - t0))


test_unreachable_endpoint.timeout = 120


def test_bad_endpoint_url(t):
    r = t.hm("pull", lib.SAMPLE_REPO, endpoint="not a url")
    check(r.rc in (1, 2), "expected exit 1 or 2 for a malformed endpoint: %r" % r)
    lib.clean_error(r)
