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

/// A log line's way to stderr: buffered whole, then written [`clean`]ed (control
/// characters escaped, the token redacted, URL credentials hidden) line by line.
#[derive(Default)]
pub struct CleanStderr(Vec<u8>);

impl std::io::Write for CleanStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.0).into_owned();
        self.0.clear();
        let mut e = std::io::stderr().lock();
        for line in text.lines() {
            // A closed stderr is ignored, as for every other line.
            let _ = writeln!(e, "{}", clean(line));
        }
        Ok(())
    }
}

impl Drop for CleanStderr {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}
