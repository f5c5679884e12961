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
    engage_core::text::hide_userinfo(&s).into_owned()
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
