//! Text that came from elsewhere (a server's answer, an input file), made safe to show.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` would act on a terminal or reorder the text around it: C0 and C1 control
/// characters (newlines and tabs included) and Unicode's bidirectional controls.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `c`, escaped as `\u{…}` when it is a control character.
pub(crate) fn push_escaped(out: &mut String, c: char) {
    if is_unsafe(c) {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    } else {
        out.push(c);
    }
}

/// `text` with every control character written as `\u{…}`: what a server sent (an error
/// body, a rejection message) can then be shown on a terminal without clearing the screen,
/// setting the window title or hiding text. Borrowed when there is nothing to escape.
///
/// ```
/// use engage_core::text::escape_controls;
/// assert_eq!(escape_controls("plain"), "plain");
/// assert_eq!(escape_controls("\u{1b}[2Jgone\u{7}"), "\\u{1b}[2Jgone\\u{7}");
/// ```
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// `text` with the user information of every `scheme://user:password@host` in it replaced
/// by `***`: a proxy's or a base URL's credentials never reach a message or a log.
///
/// ```
/// use engage_core::text::hide_userinfo;
/// assert_eq!(hide_userinfo("via http://ann:pw@proxy:3128/"), "via http://***@proxy:3128/");
/// assert_eq!(hide_userinfo("https://a@b and http://c:d@e:1"), "https://***@b and http://***@e:1");
/// ```
pub fn hide_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
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
    Cow::Owned(out)
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
