//! Redaction of secrets from text that comes from the cluster or from
//! outside (termination messages, events, rollout diffs, trace operation
//! names, health-check and Kafka readings, a model's answer). It is applied
//! where that text enters the operator, so the Incident's status, events,
//! conditions, the dashboard, GitHub and the model's prompt all inherit it.
//!
//! The rules are ours, modelled on the families a secret scanner such as
//! gitleaks knows: cloud keys, forge and chat tokens, JWTs, private keys,
//! credentials assigned to a secret-looking name, and URL userinfo. The
//! secret is replaced by a `<redacted…>` marker that no rule matches again,
//! so redacting twice changes nothing.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};

/// What a secret value is replaced by.
pub const REDACTED: &str = "<redacted>";

/// One rule: a pattern and what it hides. With `group`, only that capture
/// group is replaced (the name, scheme or user around it stays readable);
/// without it, the whole match.
struct Rule {
    pattern: &'static str,
    group: Option<usize>,
    with: &'static str,
    /// Captured values left alone: placeholders and plain words
    /// (`password: required`).
    keep: fn(&str) -> bool,
}

fn keep_none(_: &str) -> bool {
    false
}

/// A bearer "token" made of letters only is a word (`Bearer
/// authentication`), not a token.
fn keep_words(v: &str) -> bool {
    is_plain_value(v) || v.chars().all(|c| c.is_ascii_alphabetic())
}

const fn whole(pattern: &'static str, with: &'static str) -> Rule {
    Rule {
        pattern,
        group: None,
        with,
        keep: keep_none,
    }
}

const fn part(pattern: &'static str, group: usize, with: &'static str) -> Rule {
    Rule {
        pattern,
        group: Some(group),
        with,
        keep: keep_none,
    }
}

const fn value(pattern: &'static str, group: usize) -> Rule {
    Rule {
        pattern,
        group: Some(group),
        with: REDACTED,
        keep: is_plain_value,
    }
}

/// The rules, most specific first: a token inside an assignment is hidden
/// by its own rule, and the assignment rule then sees the marker.
const RULES: &[Rule] = &[
    // A private key, from its header to its footer, or to the end of the
    // text when it was cut off. Certificates and public keys are not secret.
    whole(
        r"(?s)-----BEGIN[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----|\z)",
        "<redacted-private-key>",
    ),
    // URL userinfo: the scheme, user and host stay, the password goes.
    part(
        r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s:/?#@<>]{0,256}:([^\s/?#@<>]{1,256})@",
        1,
        REDACTED,
    ),
    // AWS access key ids (long-term AKIA, temporary ASIA, and the others).
    whole(
        r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
        "<redacted-key>",
    ),
    // An AWS secret access key next to a name that says so.
    part(
        r#"(?i)aws.{0,24}?(?:secret|private|key).{0,24}?["'\s:=]+([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
        1,
        "<redacted-key>",
    ),
    // Google API keys.
    whole(r"\bAIza[0-9A-Za-z_-]{35}\b", "<redacted-key>"),
    // Azure storage and service bus connection strings, SAS signatures.
    part(
        r"(?i)\b(?:AccountKey|SharedAccessKey|SharedAccessSignature|sharedsecret)\s*=\s*([^;\s'\x22]{8,})",
        1,
        REDACTED,
    ),
    part(r"(?i)[?&;\s]sig=([A-Za-z0-9%+/=_-]{16,})", 1, REDACTED),
    // Azure AD client secrets.
    whole(
        r"\b[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}\b",
        "<redacted-key>",
    ),
    // GitHub tokens, short ones included.
    whole(r"\bgh[pousr]_[A-Za-z0-9]{6,255}\b", "<redacted-token>"),
    whole(r"\bgithub_pat_[A-Za-z0-9_]{10,255}\b", "<redacted-token>"),
    // GitLab tokens.
    whole(
        r"\b(?:glpat|gldt|glrt|glptt|glcbt|glft|glimt|glsoat|gloas|glagent)-[A-Za-z0-9_-]{8,}",
        "<redacted-token>",
    ),
    whole(r"\bGR1348941[A-Za-z0-9_-]{8,}", "<redacted-token>"),
    // Slack tokens and incoming webhooks.
    whole(r"\bxox[abposre]-[A-Za-z0-9-]{8,}", "<redacted-token>"),
    whole(r"\bxapp-\d-[A-Za-z0-9-]{8,}", "<redacted-token>"),
    part(
        r"(?i)hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9/_+-]{8,})",
        1,
        REDACTED,
    ),
    // JSON Web Tokens: a header and a payload, both base64url JSON, and a
    // signature when there is one.
    whole(
        r"\bey[A-Za-z0-9_-]{8,}\.ey[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?",
        "<redacted-jwt>",
    ),
    // Keys of model providers, package registries and payment services.
    whole(
        r"\bsk-(?:(?:proj|svcacct|admin|ant)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{20,})",
        "<redacted-key>",
    ),
    whole(
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b",
        "<redacted-key>",
    ),
    whole(r"\bnpm_[A-Za-z0-9]{36}\b", "<redacted-token>"),
    whole(
        r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{16,}",
        "<redacted-token>",
    ),
    whole(
        r"\bSG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}",
        "<redacted-key>",
    ),
    // An Authorization header, whatever its scheme.
    value(
        r#"(?i)\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|token|digest|negotiate|apikey)\s+)?([^\s"',;]+)"#,
        1,
    ),
    // A bearer token wherever it appears.
    Rule {
        pattern: r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{8,})",
        group: Some(1),
        with: REDACTED,
        keep: keep_words,
    },
    // A secret-looking name assigned a value: `DB_PASSWORD=…`,
    // `client_secret: …`, `"password": "…"`, `?access_token=…`.
    value(
        r#"(?i)(?:\b|_)(?:password|passwd|passphrase|[a-z0-9]+[_-]pwd|secret|token|credentials?|(?:api|access|secret|private|account|master|encryption|signing|license|client)[_-]?key|apikey|private[_-]key[_-]id|session[_-]?id|cookie)(?:[_-](?:base|value|b64|base64))?["']?\s*[:=]\s*(?:"([^"\n]*)"|'([^'\n]*)'|([^\s"',;&<>)}\]]+))"#,
        0,
    ),
];

struct Compiled {
    set: RegexSet,
    rules: Vec<(Regex, &'static Rule)>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| compile(RULES));

fn compile(rules: &'static [Rule]) -> Compiled {
    // The patterns are constants checked by the tests; one that did not
    // compile would be skipped, never a panic.
    let rules: Vec<(Regex, &'static Rule)> = rules
        .iter()
        .filter_map(|r| Regex::new(r.pattern).ok().map(|re| (re, r)))
        .collect();
    let set = RegexSet::new(rules.iter().map(|(re, _)| re.as_str()))
        .unwrap_or_else(|_| RegexSet::new(["$^"]).unwrap_or_else(|_| RegexSet::empty()));
    Compiled { set, rules }
}

/// Words that follow `password:` or `token=` in ordinary messages and are
/// not secrets; placeholders are not secrets either.
fn is_plain_value(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "",
        "required",
        "invalid",
        "incorrect",
        "expired",
        "missing",
        "empty",
        "null",
        "none",
        "nil",
        "true",
        "false",
        "set",
        "unset",
        "changed",
        "redacted",
        "hidden",
        "masked",
        "ok",
        "yes",
        "no",
        "wrong",
        "denied",
        "rejected",
        "refused",
        "mismatch",
        "too",
        "must",
        "is",
        "was",
        "not",
        "the",
        "a",
        "an",
        "reset",
        "undefined",
        "n/a",
    ];
    let v = v.trim();
    let lower = v.to_ascii_lowercase();
    v.starts_with("<redacted")
        || WORDS.contains(&lower.as_str())
        || v.chars()
            .all(|c| c == '*' || c == 'x' || c == 'X' || c == '.')
        || v.starts_with("${")
        || v.starts_with("$(")
        || v.starts_with("{{")
        || v.starts_with('%')
        || (v.starts_with('<') && v.ends_with('>'))
}

fn apply<'t>(text: Cow<'t, str>, re: &Regex, rule: &Rule) -> Cow<'t, str> {
    let replaced = re.replace_all(&text, |caps: &Captures| {
        let all = caps.get(0).map(|m| m.as_str()).unwrap_or_default();
        let secret = match rule.group {
            // Group 0 of a value rule: the first of its alternative groups
            // that took part in the match.
            Some(0) => (1..caps.len()).find_map(|i| caps.get(i)),
            Some(g) => caps.get(g),
            None => caps.get(0),
        };
        let Some(secret) = secret else {
            return all.to_string();
        };
        let s = secret.as_str();
        if s.starts_with("<redacted") || (rule.keep)(s) {
            return all.to_string();
        }
        let start = secret.start() - caps.get(0).map(|m| m.start()).unwrap_or(0);
        format!("{}{}{}", &all[..start], rule.with, &all[start + s.len()..])
    });
    match replaced {
        // A match that was left alone (a plain word) changes nothing.
        Cow::Owned(o) if o != *text => Cow::Owned(o),
        _ => text,
    }
}

fn run<'t>(compiled: &Compiled, text: &'t str) -> Cow<'t, str> {
    let hits = compiled.set.matches(text);
    if !hits.matched_any() {
        return Cow::Borrowed(text);
    }
    let mut out = Cow::Borrowed(text);
    for i in hits.iter() {
        if let Some((re, rule)) = compiled.rules.get(i) {
            out = apply(out, re, rule);
        }
    }
    out
}

/// The text with every secret it holds replaced by a marker. Text without
/// one is returned as it is, without copying.
pub fn text(text: &str) -> Cow<'_, str> {
    run(&COMPILED, text)
}

/// [`text`], into an owned string.
pub fn string(text: &str) -> String {
    self::text(text).into_owned()
}

/// Redacts a string in place.
pub fn in_place(s: &mut String) {
    if let Cow::Owned(o) = text(s) {
        *s = o;
    }
}

/// What must also not reach a model run by someone else: besides secrets,
/// email addresses, IP addresses and long opaque strings.
const PRIVATE: &[Rule] = &[
    whole(
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
        "<redacted-email>",
    ),
    whole(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", "<redacted-ip>"),
    whole(r"\b[A-Za-z0-9+/_-]{40,}={0,2}", "<redacted-secret>"),
];

static PRIVATE_COMPILED: LazyLock<Compiled> = LazyLock::new(|| compile(PRIVATE));

/// Text for a model's prompt: secrets, emails, IP addresses and long opaque
/// strings removed.
pub fn for_prompt(text: &str) -> String {
    run(&PRIVATE_COMPILED, &self::text(text)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSITIVE: &str = include_str!("../tests/data/redaction/positive.txt");
    const NEGATIVE: &str = include_str!("../tests/data/redaction/negative.txt");

    fn lines(corpus: &str) -> impl Iterator<Item = (usize, &str)> {
        corpus
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
    }

    #[test]
    fn every_rule_compiles() {
        for r in RULES.iter().chain(PRIVATE) {
            assert!(Regex::new(r.pattern).is_ok(), "{}", r.pattern);
        }
        assert_eq!(COMPILED.rules.len(), RULES.len());
    }

    #[test]
    fn every_positive_line_loses_its_secret_and_keeps_its_context() {
        let mut n = 0;
        for (no, line) in lines(POSITIVE) {
            // The line, then the secret parts it holds, tab-separated; `\n`
            // in the line stands for a line break.
            let mut fields = line.split('\t');
            let input = fields.next().unwrap_or_default().replace("\\n", "\n");
            let secrets: Vec<&str> = fields.collect();
            assert!(!secrets.is_empty(), "line {no} names no secret");
            let out = text(&input);
            assert_ne!(out, input, "line {no} unchanged: {input}");
            for s in secrets {
                assert!(!out.contains(s), "line {no}: {s:?} survived in {out:?}");
            }
            assert!(out.contains("<redacted"), "line {no}: {out}");
            assert_eq!(
                text(&out),
                out,
                "line {no}: redacting twice changed {out:?}"
            );
            n += 1;
        }
        assert!(n >= 50, "only {n} positive lines");
    }

    #[test]
    fn every_negative_line_is_unchanged() {
        let mut n = 0;
        for (no, line) in lines(NEGATIVE) {
            let out = text(line);
            assert!(
                matches!(out, Cow::Borrowed(_)) && out == line,
                "line {no} changed: {line:?} -> {out:?}"
            );
            n += 1;
        }
        assert!(n >= 50, "only {n} negative lines");
    }

    #[test]
    fn url_userinfo_keeps_scheme_user_and_host() {
        assert_eq!(
            text("dial postgres://app:s3cr3t@db.prod:5432/orders failed"),
            "dial postgres://app:<redacted>@db.prod:5432/orders failed"
        );
    }

    #[test]
    fn an_assignment_keeps_its_name() {
        assert_eq!(
            text("DB_PASSWORD=hunter2 started"),
            "DB_PASSWORD=<redacted> started"
        );
        assert_eq!(
            text(r#"{"user":"app","password":"hunter2"}"#),
            r#"{"user":"app","password":"<redacted>"}"#
        );
    }

    #[test]
    fn the_prompt_also_loses_emails_and_addresses() {
        let p = for_prompt("mail ops@example.com from 10.0.3.7:5432 with token=abc123");
        for gone in ["ops@example.com", "10.0.3.7", "abc123"] {
            assert!(!p.contains(gone), "{p}");
        }
    }
}
