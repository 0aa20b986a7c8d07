"""test_ssrf.py - redirects from the hub to internal addresses (cloud
metadata, private networks) are refused after name resolution, before any
connection, and the error names the refused target; non-http schemes too."""

import lib
from lib import check, SAMPLE_REPO

BIG = "model.safetensors"   # LFS: its resolve answer is a redirect


def redirect_pull(t, location, *extra, match="resolve:" + BIG):
    emu = t.emu()
    emu.faults([{"match": match, "kind": "redirect", "location": location, "times": -1}])
    r = t.hm("pull", SAMPLE_REPO, "--json", *extra, timeout=60)
    return emu, r


def resolves(emu):
    return [e for e in emu.log() if "/resolve/" in e["path"]]


def test_redirect_to_metadata_address_refused(t):
    emu, r = redirect_pull(t, "http://169.254.169.254/latest/meta-data/")
    check(r.rc == 1, "a redirect to the metadata address must fail the pull: %r" % r)
    lib.clean_error(r, ["169.254.169.254"])
    check("link-local" in r.err, "the error should say why (link-local): %r" % r)
    # refused in the open-socket callback: curl's connect error never shows,
    # and the refusal is not retried (the hub was asked for the file once)
    check("timed out" not in r.err.lower() and "retrying" not in r.err,
          "a connection to the refused address was attempted: %r" % r)
    n = len([e for e in resolves(emu) if e["path"].endswith("/" + BIG)])
    check(n == 1, "the resolve URL was asked %d times: a refused redirect is not retried" % n)


def test_redirect_to_mapped_link_local_refused_even_when_private_allowed(t):
    emu, r = redirect_pull(t, "http://[::ffff:169.254.169.254]/latest/", "--allow-private-redirects")
    check(r.rc == 1, "an IPv4-mapped link-local target must be refused: %r" % r)
    lib.clean_error(r, ["169.254.169.254"])
    check("link-local" in r.err, "the error should say link-local: %r" % r)


def test_redirect_to_private_address_refused(t):
    # the endpoint is on loopback: a private range is not its own
    emu, r = redirect_pull(t, "http://10.255.255.1:9/blob")
    check(r.rc == 1, "a redirect to a private address must fail: %r" % r)
    lib.clean_error(r, ["10.255.255.1"])
    check("private" in r.err and "--allow-private-redirects" in r.err,
          "the error should say private and name the option: %r" % r)


def test_api_redirect_to_metadata_refused(t):
    emu, r = redirect_pull(t, "http://169.254.169.254/latest/meta-data/", match="api")
    check(r.rc == 1, "an API redirect to the metadata address must fail: %r" % r)
    lib.clean_error(r, ["169.254.169.254"])


def test_redirect_non_http_scheme_named(t):
    emu, r = redirect_pull(t, "file:///etc/passwd")
    check(r.rc == 1, "a redirect to file:// must fail: %r" % r)
    lib.clean_error(r, ["file"])
    check("'file'" in r.err and "file:///etc/passwd" in r.err,
          "the error should name the scheme and the target: %r" % r)


def test_redirect_to_endpoint_range_followed(t):
    # twin: the emulator's CDN is on 127.0.0.2, loopback like the endpoint
    emu = t.emu()
    r = t.hm("pull", SAMPLE_REPO, "--json")
    check(r.rc == 0, "a redirect inside the endpoint's own range must work: %r" % r)
    check(any(e["host"] == "cdn" for e in emu.log()), "the CDN was not used")
