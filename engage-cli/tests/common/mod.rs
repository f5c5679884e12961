//! What the CLI's test files share: the binary with none of the user's settings that
//! change what it does, input files, the JSON report, an emulator.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use engage_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

/// The proxy settings of the environment, in either case.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The `engage` binary without the caller's token or proxy settings (`REQUEST_METHOD`
/// makes the proxy matcher ignore `HTTP_PROXY`), stopped after a minute.
pub fn engage() -> Command {
    let mut c = Command::cargo_bin("engage").unwrap();
    c.env_remove("MIXPANEL_TOKEN")
        .env_remove("MIXPANEL_TOKEN_FILE")
        .env_remove("REQUEST_METHOD")
        .timeout(Duration::from_secs(60));
    for v in PROXY_VARIABLES {
        c.env_remove(v);
    }
    c
}

/// `engage import ARGS` to `base_url` with `token`, retrying after milliseconds.
pub fn import_with(base_url: &str, token: &str, args: &[&str]) -> Command {
    let mut c = engage();
    c.arg("import").args(args).args([
        "--endpoint",
        base_url,
        "--token",
        token,
        "--backoff-base-ms",
        "5",
        "--backoff-max-ms",
        "20",
    ]);
    c
}

/// Writes a file in `dir`; returns its path.
pub fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

/// The JSON report on stdout.
pub fn report(out: &[u8]) -> Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// An in-process emulator for the project of `token`.
pub fn emulator_for(token: &str) -> Emulator {
    Emulator::start(EmulatorConfig::default().token(token)).unwrap()
}
