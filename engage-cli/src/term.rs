//! Writing to the terminal and to pipes. A closed stdout or stderr (`engage … | head`)
//! never panics and never changes the exit status; every text that came from a server, an
//! error or an input is made safe to show first (see [`clean`]).

use std::borrow::Cow;
use std::fmt::Display;
use std::io::Write;
use std::sync::OnceLock;

/// The project token, once known, so that no message shows it whole.
static SECRET: OnceLock<(String, String)> = OnceLock::new();

/// Registers the token to redact from every message: it is replaced by its redacted form
/// (first characters and an ellipsis).
pub fn redact_token(token: &engage_core::Token) {
    let _ = SECRET.set((token.expose().to_owned(), token.redacted()));
}

/// `text` made safe to show to a person: control characters escaped (a server's
/// `ESC[2J` cannot clear the screen), the project token redacted, and the
/// `user:password@` of any URL hidden.
pub fn clean(text: &str) -> String {
    let mut s: Cow<'_, str> = engage_core::text::escape_controls(text);
    // A token too short to be a project's (tests, the emulator's) would match ordinary
    // text: only real-looking ones are searched for.
    if let Some((token, shown)) = SECRET.get()
        && token.len() >= 8
        && s.contains(token.as_str())
    {
        s = Cow::Owned(s.replace(token.as_str(), shown));
    }
    hide_userinfo(&s)
}

/// Replaces the user information of every `scheme://user:password@host` in `text` with
/// `***`.
pub fn hide_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(['/', '?', '#', ' ', '"', '\'', '>', ')'])
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// One line on stdout; a closed pipe is ignored.
pub fn out(line: impl Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}").and_then(|()| o.flush());
}

/// One line on stderr; a closed pipe is ignored.
pub fn err(line: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_wherever_a_url_appears() {
        assert_eq!(
            hide_userinfo("invalid base URL \"http://user:pw@127.0.0.1:9/x\": bad"),
            "invalid base URL \"http://***@127.0.0.1:9/x\": bad"
        );
        assert_eq!(
            hide_userinfo("https://a@b and http://c:d@e:1"),
            "https://***@b and http://***@e:1"
        );
        assert_eq!(hide_userinfo("no url here"), "no url here");
        assert_eq!(hide_userinfo("http://host/p@th"), "http://host/p@th");
    }
}
