//! Where the project token comes from, and making sure it is sent clean.

use crate::ImportArgs;
use crate::term;

/// The token from `--token`/`MIXPANEL_TOKEN` or `--token-file`/`MIXPANEL_TOKEN_FILE`, with
/// surrounding whitespace trimmed (with a notice) and inner whitespace or control
/// characters refused: a token is never sent as something it is not.
pub fn from_args(args: &ImportArgs) -> Result<Option<String>, String> {
    let (raw, origin) = match (&args.token, &args.token_file) {
        (Some(t), _) => (t.clone(), "the token".to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            (first.to_owned(), format!("the token in {}", path.display()))
        }
        (None, None) => return Ok(None),
    };
    clean_token(&raw, &origin).map(Some)
}

/// Trims `raw`, refusing what trimming cannot fix.
pub fn clean_token(raw: &str, origin: &str) -> Result<String, String> {
    let trimmed = raw.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    if trimmed.is_empty() {
        return Err(format!("{origin} is empty"));
    }
    if let Some((at, c)) = trimmed
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{origin} holds {} at character {}: a Mixpanel project token has none (32 hexadecimal characters); check how it was pasted",
            describe(c),
            trimmed[..at].chars().count() + 1
        ));
    }
    if trimmed.len() != raw.len() {
        let removed: String = raw
            .chars()
            .filter(|c| c.is_whitespace() || c.is_control())
            .map(describe)
            .collect::<Vec<_>>()
            .join(", ");
        term::err(format_args!(
            "note: {origin} had {removed} around it (a newline from `$(cat file)`?); it was trimmed"
        ));
    }
    Ok(trimmed.to_owned())
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\n' => "a newline (\\n)".into(),
        '\r' => "a carriage return (\\r)".into(),
        '\t' => "a tab".into(),
        c => format!("the control character U+{:04X}", c as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_or_refused() {
        assert_eq!(clean_token("abc\r\n", "t").unwrap(), "abc");
        assert_eq!(clean_token(" abc", "t").unwrap(), "abc");
        assert!(
            clean_token("ab c", "t")
                .unwrap_err()
                .contains("a space at character 3")
        );
        assert!(
            clean_token("ab\u{1b}c", "t")
                .unwrap_err()
                .contains("U+001B")
        );
        assert!(clean_token(" \r\n", "t").unwrap_err().contains("empty"));
    }
}
