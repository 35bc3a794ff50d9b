//! Registry authentication: credentials, `WWW-Authenticate` challenges, and bearer tokens cached
//! per scope.
//!
//! Secrets never reach a log or an error: [`Credentials`] prints redacted, and the token cache
//! is only ever read to build an `Authorization` header.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// What the user gave to authenticate with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or personal access token).
    Basic { username: String, password: String },
    /// An identity (refresh) token, as docker keeps for some registries.
    IdentityToken { username: String, token: String },
}

impl Credentials {
    pub fn basic(username: &str, password: &str) -> Self {
        Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    pub fn username(&self) -> &str {
        match self {
            Credentials::Basic { username, .. } | Credentials::IdentityToken { username, .. } => {
                username
            }
        }
    }

    /// `Basic base64(user:password)`, when these credentials can make one.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken { .. } => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::IdentityToken { username, .. } => {
                write!(
                    f,
                    "IdentityToken {{ username: {username:?}, token: <redacted> }}"
                )
            }
        }
    }
}

/// One challenge of a `WWW-Authenticate` header: a scheme and its parameters (names
/// lowercased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }

    pub fn is_basic(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("basic")
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value (RFC 9110 §11.6.1): one or more challenges, each a scheme
/// followed by comma-separated `name=value` or `name="quoted value"` parameters.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut lexer = Lexer {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        lexer.skip_separators();
        let Some(word) = lexer.token() else { break };
        lexer.skip_ws();
        if lexer.peek() == Some(b'=') && !out.is_empty() {
            // A parameter of the current challenge.
            lexer.i += 1;
            lexer.skip_ws();
            let value = lexer.value();
            if let Some(current) = out.last_mut() {
                current.params.insert(word.to_ascii_lowercase(), value);
            }
            continue;
        }
        out.push(Challenge {
            scheme: word,
            params: BTreeMap::new(),
        });
        // token68 form (`Negotiate abc==`) carries no parameters we use: skip it.
        lexer.skip_ws();
        if lexer.peek().is_some_and(|c| c != b',') && lexer.lookahead_is_token68() {
            lexer.token68();
        }
    }
    out
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == b' ' || c == b'\t') {
            self.i += 1;
        }
    }
    fn skip_separators(&mut self) {
        while self
            .peek()
            .is_some_and(|c| c == b' ' || c == b'\t' || c == b',')
        {
            self.i += 1;
        }
    }
    fn is_tchar(c: u8) -> bool {
        c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
    }
    fn token(&mut self) -> Option<String> {
        loop {
            let start = self.i;
            while self.peek().is_some_and(Self::is_tchar) {
                self.i += 1;
            }
            if self.i > start {
                return Some(String::from_utf8_lossy(&self.s[start..self.i]).into_owned());
            }
            // Not a token: skip one byte, so a malformed header cannot loop forever.
            self.peek()?;
            self.i += 1;
        }
    }
    fn value(&mut self) -> String {
        if self.peek() == Some(b'"') {
            self.i += 1;
            let mut out = Vec::new();
            while let Some(c) = self.peek() {
                self.i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        if let Some(n) = self.peek() {
                            out.push(n);
                            self.i += 1;
                        }
                    }
                    _ => out.push(c),
                }
            }
            return String::from_utf8_lossy(&out).into_owned();
        }
        let start = self.i;
        while self.peek().is_some_and(|c| c != b',' && c != b' ') {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    /// Whether what follows is a token68 rather than the first `name=` parameter.
    fn lookahead_is_token68(&self) -> bool {
        let mut j = self.i;
        while j < self.s.len() && Self::is_tchar(self.s[j]) {
            j += 1;
        }
        let mut k = j;
        while k < self.s.len() && self.s[k] == b' ' {
            k += 1;
        }
        // `name=value` has a tchar run then `=` then something that is not `=`/`,`/end.
        if k < self.s.len() && self.s[k] == b'=' {
            let next = self.s.get(k + 1).copied();
            return matches!(next, None | Some(b'=') | Some(b','));
        }
        false
    }
    fn token68(&mut self) {
        while self.peek().is_some_and(|c| c != b',') {
            self.i += 1;
        }
    }
}

/// A registry scope: what a token must allow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub repository: String,
    pub actions: &'static str,
}

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            actions: "pull",
        }
    }

    pub fn push(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            actions: "pull,push",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repository:{}:{}", self.repository, self.actions)
    }
}

/// A token endpoint's answer (`token` or the OAuth2 `access_token`).
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it may be reused. docker treats lifetimes under 60 s as 60 s; we
    /// keep a margin of 10% so a token never expires in flight.
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).max(60));
        Some((token, lifetime.mul_f64(0.9)))
    }
}

/// Bearer tokens by scope key, each with the instant it stops being reused.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        let (token, until) = tokens.get(key)?;
        (Instant::now() < *until).then(|| token.clone())
    }

    pub(crate) fn put(&self, key: &str, token: String, lifetime: Duration) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key.to_string(), (token, Instant::now() + lifetime));
        }
    }

    pub(crate) fn forget(&self, key: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(key);
        }
    }
}

/// The cache key for a set of scopes.
pub(crate) fn scope_key(scopes: &[Scope]) -> String {
    let mut parts: Vec<String> = scopes.iter().map(Scope::to_string).collect();
    parts.sort();
    parts.dedup();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges_as_registries_send_them() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
    }

    #[test]
    fn parses_several_challenges_unquoted_values_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="Registry \"Realm\"", Bearer realm=https://t.example/token , service=svc,error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some(r#"Registry "Realm""#));
        assert!(c[1].is_bearer());
        assert_eq!(c[1].param("realm"), Some("https://t.example/token"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        let c = parse_challenges("Negotiate abc==, Basic realm=x");
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[1].is_basic());
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(" ,, ").is_empty());
        // Garbage never panics.
        let _ = parse_challenges("=\"\\");
        let _ = parse_challenges("Bearer realm=\"unterminated");
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let c = Credentials::basic("alice", "s3cret-pass");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("alice"));
        assert_eq!(c.basic_header().unwrap(), "Basic YWxpY2U6czNjcmV0LXBhc3M=");
    }

    #[test]
    fn tokens_are_reused_until_they_expire() {
        let cache = TokenCache::default();
        let key = scope_key(&[Scope::push("a/b"), Scope::pull("a/c"), Scope::push("a/b")]);
        assert_eq!(key, "repository:a/b:pull,push repository:a/c:pull");
        cache.put(&key, "t1".into(), Duration::from_secs(60));
        assert_eq!(cache.get(&key).as_deref(), Some("t1"));
        cache.put(&key, "t2".into(), Duration::ZERO);
        assert_eq!(cache.get(&key), None);
        let (tok, life) =
            serde_json::from_str::<TokenResponse>(r#"{"access_token":"x","expires_in":300}"#)
                .unwrap()
                .into_token()
                .unwrap();
        assert_eq!((tok.as_str(), life), ("x", Duration::from_secs(270)));
        let short = serde_json::from_str::<TokenResponse>(r#"{"token":"y","expires_in":5}"#)
            .unwrap()
            .into_token()
            .unwrap();
        assert_eq!(short.1, Duration::from_secs(54));
        assert!(
            serde_json::from_str::<TokenResponse>(r#"{"token":""}"#)
                .unwrap()
                .into_token()
                .is_none()
        );
    }
}
