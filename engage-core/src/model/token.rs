//! The project token, kept out of logs.

use std::fmt;
use std::sync::Arc;

/// A Mixpanel project token.
///
/// Mixpanel does not treat the token as a secret, but it must still never land whole in
/// logs: `Debug` shows only its first four characters, and no error message of this crate
/// contains it.
///
/// ```
/// use engage_core::Token;
/// let token = Token::new("0123456789abcdef").unwrap();
/// assert_eq!(format!("{token:?}"), "Token(\"0123…\")");
/// assert!(Token::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(Arc<str>);

/// The token given was empty (or only whitespace).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the project token is empty")]
pub struct EmptyToken;

impl Token {
    /// Wraps a token; fails if it is empty or only whitespace.
    pub fn new(token: impl AsRef<str>) -> Result<Token, EmptyToken> {
        let token = token.as_ref();
        if token.trim().is_empty() {
            return Err(EmptyToken);
        }
        Ok(Token(Arc::from(token)))
    }

    /// The whole token. Take care not to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first four characters (fewer for short tokens: never more than half)
    /// followed by an ellipsis, safe to show.
    pub fn redacted(&self) -> String {
        let shown = (self.0.chars().count() / 2).min(4);
        let prefix: String = self.0.chars().take(shown).collect();
        format!("{prefix}…")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Token").field(&self.redacted()).finish()
    }
}
