"""Is an email really from the domain its From names? Pure: reads the verdicts providers already give.

DMARC's rule, without DNS: the email passes when SPF passed for an envelope sender, or DKIM
passed for a signing domain, that is aligned with the From domain (the same domain, or one a
subdomain of the other). The relay checks no signature itself; it trusts the receiving
provider's verdict, or an `Authentication-Results` header from an `authserv-id` the operator
names (RELAY_TRUSTED_AUTHSERV_IDS), and only the topmost such header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PASS = "pass"
FAIL = "fail"
NONE = "none"  # no verdict to go by

ENFORCE = "enforce"
REPORT = "report"
OFF = "off"
MODES = (ENFORCE, REPORT, OFF)

NOT_AUTHENTICATED = "sender not authenticated"


@dataclass(frozen=True)
class SenderAuth:
    """The verdict on an email's From domain, with what it rests on."""

    status: str = NONE
    detail: str = ""
    #: The caller itself is trusted to say who sent it (the partner API, a provider's record of
    #: mail the account sent): its routing metadata is honoured whatever the direction.
    vouched: bool = False

    def describe(self) -> str:
        return f"{self.status}: {self.detail}" if self.detail else self.status


def vouched_by(source: str) -> SenderAuth:
    return SenderAuth(PASS, source, vouched=True)


# (method, result, domain) as a receiving server reports them.
Result = tuple[str, str, str]


def domain_of(address: str | None) -> str:
    return (address or "").strip().strip("<>").rpartition("@")[2].lower().strip(".")


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment: the same domain, or one a subdomain of the other."""
    d, f = domain.lower().strip("."), from_domain.lower().strip(".")
    if "." not in d or "." not in f:
        return False  # a bare top-level domain aligns with nothing
    return d == f or f.endswith("." + d) or d.endswith("." + f)


def counts_for(method: str, result: str, domain: str, from_domain: str) -> bool:
    """Whether one result vouches for the From domain: a pass for an aligned domain, or a DMARC
    pass (DMARC judges the From domain itself; when the report names the domain, it must align)."""
    if result != PASS:
        return False
    if method == "dmarc" and not domain:
        return True
    return aligned(domain, from_domain)


def shown(method: str, result: str, domain: str) -> str:
    """One result as people read it; an SPF or DKIM result for no domain (a provider that names
    none) says so, since it aligns with nothing."""
    if domain:
        return f"{method}={result} {domain}"
    return f"{method}={result}" if method == "dmarc" else f"{method}={result} (no domain)"


def judge(from_address: str | None, results: Iterable[Result]) -> SenderAuth:
    """PASS on the first aligned pass (or a DMARC pass); FAIL when there were results but none did."""
    from_domain = domain_of(from_address)
    seen = []
    for method, result, domain in results:
        method, result = method.lower(), result.lower()
        seen.append(shown(method, result, domain))
        if counts_for(method, result, domain, from_domain):
            return SenderAuth(PASS, seen[-1])
    if not seen:
        return SenderAuth(NONE)
    return SenderAuth(FAIL, ", ".join(seen) + f" (From domain {from_domain or 'missing'})")


#: Characters of one header value read for its verdicts: a real one is a few hundred.
VERDICT_CHARS = 8192
_QUOTED = r'"(?:[^"\\]|\\.)*+"'
#: Pieces of a value between `;`s, and words between white space: a quoted string is one piece
#: of text whatever it holds (an unclosed quote is a plain character).
_SEGMENT = re.compile(rf'(?:{_QUOTED}|[^;"]|")++')
_WORD = re.compile(rf'(?:{_QUOTED}|[^\s"]|")++')
_METHOD = re.compile(r"^\s*(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)
#: `ptype.property=value` of RFC 8601, and the older `envelope-from=`.
_PROPERTY = re.compile(r"([a-z]+\.[a-z0-9-]+|envelope-from)=(.*)", re.IGNORECASE | re.DOTALL)
#: The identity each method's result is for: SPF the envelope sender, DKIM the signing domain
#: (else the signer's identity), DMARC the From domain.
_IDENTITIES = {
    "spf": ("smtp.mailfrom", "envelope-from"),
    "dkim": ("header.d", "header.i"),
    "dmarc": ("header.from",),
}


def without_comments(value: str) -> str:
    """The first VERDICT_CHARS characters of a structured header value with its comments
    (parenthesised, nested, with `\\` escapes) made a space; a `(` inside a quoted string is text.
    A comment is the sender's to write (`(header.d=acme-living.com)`), never a verdict."""
    kept: list[str] = []
    depth, quoted, escaped = 0, False, False
    for character in value[:VERDICT_CHARS]:
        if escaped:
            escaped = False
        elif character == "\\":
            escaped = True
        elif quoted:
            quoted = character != '"'
        elif character == "(":
            depth += 1
            continue
        elif character == ")" and depth:
            depth -= 1
            if not depth:
                kept.append(" ")
            continue
        elif character == '"' and not depth:
            quoted = True
        if not depth:
            kept.append(character)
    return "".join(kept)


def _unquoted(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_authentication_results(value: str, trusted_ids: Iterable[str]) -> list[Result] | None:
    """The results of one `Authentication-Results` header; None unless its authserv-id is trusted.
    Read as RFC 8601 lays it out: comments dropped, `;`-separated results, white-space-separated
    `ptype.property=value` words, each method's own identity (a `header.d` in an SPF result, or
    inside an `smtp.helo` value, is nothing)."""
    authserv, _, rest = without_comments(value).partition(";")
    words = authserv.split()
    if not words or words[0].lower().strip() not in {t.lower() for t in trusted_ids}:
        return None
    results = []
    for clause in _SEGMENT.findall(rest):
        method = _METHOD.match(clause)
        if not method:
            continue
        properties: dict[str, str] = {}
        for word in _WORD.findall(clause[method.end() :]):
            found = _PROPERTY.fullmatch(word)
            if found:
                properties.setdefault(found[1].lower(), _unquoted(found[2]))
        name = method[1].lower()
        identity = next((properties[k] for k in _IDENTITIES[name] if properties.get(k)), "")
        results.append((name, method[2], domain_of(identity) if "@" in identity else identity.lower().strip(".")))
    return results


def from_authentication_results(
    headers: Iterable[tuple[str, str]], from_address: str | None, trusted_ids: Iterable[str]
) -> SenderAuth:
    """The verdict of the topmost `Authentication-Results` from a trusted authserv-id, if any."""
    trusted = tuple(trusted_ids)
    if not trusted:
        return SenderAuth(NONE)
    for name, value in headers:
        if name.lower() == "authentication-results":
            results = parse_authentication_results(value, trusted)
            if results is not None:
                return judge(from_address, results)
    return SenderAuth(NONE)


def received_spf_fields(value: str) -> tuple[str, dict[str, str]]:
    """The result and the `key=value` pairs of a `Received-SPF` value (RFC 7208 §9.1): comments
    dropped, pairs split on `;` outside quoted strings, the first of each key kept. A key is read
    only where a pair starts, so `helo=envelope-from=…` is a HELO name, not an envelope sender."""
    text = without_comments(value)
    segments = _SEGMENT.findall(text)
    if not segments or not segments[0].split():
        return "", {}
    result, _, first_pair = segments[0].strip().partition(" ")
    fields: dict[str, str] = {}
    for pair in [first_pair, *segments[1:]]:
        key, equals, found = pair.partition("=")
        if equals and key.strip():
            fields.setdefault(key.strip().lower(), found.strip())
    return result.lower(), fields


def from_received_spf(value: str | None, envelope_from: str | None, from_address: str | None) -> SenderAuth:
    """`Received-SPF: Pass (…) … envelope-from=a@b.com; …` added by the receiving provider."""
    if not value or not value.split():
        return SenderAuth(NONE)
    result, fields = received_spf_fields(value)
    if not result:
        return SenderAuth(NONE)
    named = fields.get("envelope-from")
    return judge(from_address, [("spf", result, domain_of(named if named else envelope_from))])


_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+\.?", re.IGNORECASE)
#: One entry of SendGrid's `dkim` field, `@acme-living.com : pass`, read from its end: SendGrid
#: writes the signature's `d=` as the message has it, so everything before the last `:` is that.
_SENDGRID_ENTRY = re.compile(r"\s*@?(.*?)\s*:\s*([a-z]+)\s*", re.IGNORECASE | re.DOTALL)


def from_sendgrid(
    spf: str | None,
    dkim: str | None,
    envelope_from: str | None,
    from_address: str | None,
    headers: Iterable[tuple[str, str]] = (),
    complete: bool = True,
) -> SenderAuth:
    """SendGrid Inbound Parse's `SPF` (`pass`, for the envelope sender) and `dkim` field
    (`{@acme-living.com : pass}`, one entry per signature). The `dkim` field echoes each
    signature's `d=` as the sender wrote it, so it is believed only when it is exactly one entry
    per DKIM-Signature of the message, each a plain domain named by one of them: a `d=` written
    to look like several entries (`acme-living.com : pass, @x`) makes the field say nothing."""
    results: list[Result] = []
    signers = signing_domains(headers)
    entries = [e for e in (dkim or "")[:VERDICT_CHARS].strip().strip("{}").split(",") if e.strip()]
    parsed = [_SENDGRID_ENTRY.fullmatch(entry) for entry in entries]
    if (
        complete
        and entries
        and len(entries) == len(signers)
        and all(found and _DOMAIN.fullmatch(found[1]) and found[1].lower().strip(".") in signers for found in parsed)
    ):
        results += [("dkim", found[2], found[1].lower().strip(".")) for found in parsed if found]
    elif entries and (dkim or "").strip().lower() != "none":
        results.append(("dkim", "unreadable", ""))
    if spf and spf.strip():
        results.append(("spf", spf.strip().split()[0], domain_of(envelope_from)))
    return judge(from_address, results)


_DKIM_DOMAIN = re.compile(r"(?:^|;)\s*d\s*=\s*([^;]*)", re.IGNORECASE)
_SIGNATURE_HEADERS = ("dkim-signature", "domainkey-signature")


def signing_domains(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The `d=` domain of every DKIM-Signature (and older DomainKey-Signature) header."""
    found = []
    for name, value in headers:
        if name.lower() in _SIGNATURE_HEADERS:
            signer = _DKIM_DOMAIN.search(value)
            found.append(signer[1].strip().lower().strip(".") if signer else "")
    return found


def unattributed_dkim(
    result: str, headers: Iterable[tuple[str, str]], from_address: str | None, complete: bool = True
) -> Result:
    """A provider's one DKIM verdict on a whole message, naming no domain. It speaks for the From
    domain only when every signature in the message is by an aligned domain: whichever one the
    provider checked is aligned then. One stranger's signature beside a forged one for the From
    domain, or a header block the relay did not read whole (`complete`), and the verdict is kept
    without a domain, which aligns with nothing."""
    signers = signing_domains(headers)
    from_domain = domain_of(from_address)
    if complete and signers and all(aligned(signer, from_domain) for signer in signers):
        return ("dkim", result, signers[0])
    return ("dkim", result, "")


def from_mailgun(
    headers: Iterable[tuple[str, str]], envelope_from: str | None, from_address: str | None, complete: bool = True
) -> SenderAuth:
    """Mailgun's `X-Mailgun-Spf` and `X-Mailgun-Dkim-Check-Result`: one DKIM verdict for the
    message, attributed to its signers as `unattributed_dkim` allows; SPF for the envelope sender."""
    pairs = [(name.lower(), value) for name, value in headers]
    spf = next((v for n, v in pairs if n == "x-mailgun-spf"), None)
    dkim = next((v for n, v in pairs if n == "x-mailgun-dkim-check-result"), None)
    results: list[Result] = []
    if dkim and dkim.strip():
        results.append(unattributed_dkim(dkim.strip().split()[0], pairs, from_address, complete))
    if spf and spf.strip():
        results.append(("spf", spf.strip().split()[0], domain_of(envelope_from)))
    return judge(from_address, results)


#: SES receipt verdicts (`spfVerdict`, `dkimVerdict`, `dmarcVerdict`): GRAY (not checked, or no
#: DMARC policy) is no verdict; PROCESSING_FAILED is kept as an error that vouches for nothing.
_SES_RESULTS = {"PASS": PASS, "FAIL": FAIL, "PROCESSING_FAILED": "temperror"}


def from_ses(
    spf: str | None,
    dkim: str | None,
    dmarc: str | None,
    envelope_from: str | None,
    from_address: str | None,
    headers: Iterable[tuple[str, str]],
    complete: bool = True,
) -> SenderAuth:
    """SES's receipt verdicts. DMARC is SES's judgement of the From domain itself, so its PASS
    counts (unless the message has more than one From, which DMARC leaves undefined); SPF is for
    the envelope sender (`mail.source`) and counts when that aligns; DKIM names no domain
    (`unattributed_dkim`)."""
    pairs = list(headers)
    single_from = sum(1 for name, _ in pairs if name.lower() == "from") == 1
    results: list[Result] = []
    if dmarc in _SES_RESULTS and (single_from or _SES_RESULTS[dmarc] != PASS):
        results.append(("dmarc", _SES_RESULTS[dmarc], ""))
    if spf in _SES_RESULTS:
        results.append(("spf", _SES_RESULTS[spf], domain_of(envelope_from)))
    if dkim in _SES_RESULTS:
        results.append(unattributed_dkim(_SES_RESULTS[dkim], pairs, from_address, complete))
    return judge(from_address, results)


def from_mandrill(
    spf: str | None,
    dkim_signed: object,
    dkim_valid: object,
    from_address: str | None,
    headers: Iterable[tuple[str, str]],
    complete: bool = True,
) -> SenderAuth:
    """Mandrill inbound's `msg.dkim` (`signed`, `valid`: no domain) and `msg.spf.result`. Mandrill
    names neither the signing domain nor the envelope sender its SPF check was for: DKIM is
    attributed as `unattributed_dkim` allows; SPF is recorded but can vouch for no domain."""
    results: list[Result] = []
    if dkim_signed is True:
        results.append(unattributed_dkim(PASS if dkim_valid is True else FAIL, headers, from_address, complete))
    if spf and spf.strip():
        results.append(("spf", spf.strip().split()[0], ""))
    return judge(from_address, results)


#: MailerSend's `spf_check.code` is an SPF qualifier: `+` pass, `-` fail, `~` softfail, `?` neutral.
_SPF_QUALIFIERS = {"+": PASS, "-": FAIL, "~": "softfail", "?": "neutral"}


def from_mailersend(
    spf_code: str | None,
    dkim_check: object,
    envelope_from: str | None,
    from_address: str | None,
    headers: Iterable[tuple[str, str]],
    complete: bool = True,
) -> SenderAuth:
    """MailerSend inbound's `spf_check` (for the envelope sender, `data.sender.email`) and
    `dkim_check`. `dkim_check: true` is a DKIM pass naming no domain (`unattributed_dkim`);
    `false` is also what MailerSend sends when it did not check, so it is no verdict."""
    results: list[Result] = []
    if dkim_check is True:
        results.append(unattributed_dkim(PASS, headers, from_address, complete))
    if spf_code in _SPF_QUALIFIERS:
        results.append(("spf", _SPF_QUALIFIERS[spf_code], domain_of(envelope_from)))
    return judge(from_address, results)


_RECEIVER = re.compile(r"(?:^|[;\s])receiver\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)


def from_trusted_received_spf(
    headers: Iterable[tuple[str, str]], envelope_from: str | None, from_address: str | None, trusted_ids: Iterable[str]
) -> SenderAuth:
    """The topmost `Received-SPF` header, when its `receiver=` is an operator-trusted host: a
    trusted receiver adds its own above any a sender wrote, so only the topmost can be its."""
    trusted = {t.lower() for t in trusted_ids}
    value = next((v for name, v in headers if name.lower() == "received-spf"), None)
    receiver = _RECEIVER.search(value or "")
    if not trusted or not receiver or receiver[1].lower().strip(".") not in trusted:
        return SenderAuth(NONE)
    return from_received_spf(value, envelope_from, from_address)


def from_trusted_headers(
    headers: Iterable[tuple[str, str]], envelope_from: str | None, from_address: str | None, trusted_ids: Iterable[str]
) -> SenderAuth:
    """What a receiving server the operator trusts wrote into the message: its topmost
    `Authentication-Results`, else its `Received-SPF`. For providers that pass the headers on
    and give no verdict of their own."""
    pairs, trusted = list(headers), tuple(trusted_ids)
    verdict = from_authentication_results(pairs, from_address, trusted)
    if verdict.status == NONE:
        verdict = from_trusted_received_spf(pairs, envelope_from, from_address, trusted)
    return verdict


def strongest(*verdicts: SenderAuth) -> SenderAuth:
    """One verdict from several sources the relay trusts (the provider's own, the operator's MTA):
    any PASS vouches for the sender; else the first FAIL; else none."""
    for status in (PASS, FAIL):
        found = next((v for v in verdicts if v.status == status), None)
        if found is not None:
            return found
    return SenderAuth(NONE)
